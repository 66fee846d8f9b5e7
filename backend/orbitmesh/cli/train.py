"""``orbitmesh train CONFIG.toml``: train or fine-tune an LRM on procedural objects or a folder of renders."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("train", help="train or fine-tune an LRM from a TOML config")
    parser.add_argument("config", help="training config (TOML), e.g. configs/preview.toml")
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    parser.add_argument("--overwrite", action="store_true", help="start over even if the run folder has a checkpoint")
    parser.add_argument("--device", help="override train.device (auto, cpu, cuda, mps)")
    parser.add_argument("--output-dir", help="override output.dir (the run folder)")
    parser.add_argument("--export", help="override output.export (where the final model is saved)")
    parser.add_argument("--steps-scale", type=float, help="multiply every stage's steps (quick trial runs)")
    parser.add_argument("--time-budget", type=float, help="override train.time_budget_minutes")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from orbitmesh.cli.common import console_progress
    from orbitmesh.cli.optional import import_tool

    training = import_tool("orbitmesh.training", "train")  # the optional orbitmesh[train] part
    cfg = training.load_config(args.config)
    if args.device:
        cfg.train.device = args.device
    if args.output_dir:
        cfg.output.dir = args.output_dir
    if args.export:
        cfg.output.export = args.export
    if args.time_budget:
        cfg.train.time_budget_minutes = args.time_budget
    if args.steps_scale:
        for st in cfg.stages:
            st.steps = max(1, round(st.steps * args.steps_scale))
    # The trainer prints its own progress lines; the tracker only carries cancellation.
    trainer = training.Trainer(cfg, progress=console_progress(quiet=True))
    summary = trainer.run(resume=args.resume, overwrite=args.overwrite)
    print(json.dumps(summary, indent=2, default=float))
    return 0
