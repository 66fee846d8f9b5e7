"""Arguments and helpers shared by several commands."""

from __future__ import annotations

import argparse
from typing import Any

from orbitmesh.pipeline.request import cli_flag, default_settings, settings_spec
from orbitmesh.progress import ProgressTracker
from orbitmesh.settings import DEVICES, DTYPES, Settings, load_settings


def add_request_args(parser: argparse.ArgumentParser) -> None:
    """One option per GenerateRequest setting (``--mc-resolution`` ...), typed, bounded and explained by it."""
    defaults = default_settings()
    for name, spec in settings_spec().items():
        default = defaults[name]
        kwargs: dict[str, Any] = {"dest": name, "default": default, "help": spec.help}
        if spec.type == "choice":
            kwargs["choices"] = spec.values
        elif spec.type == "str":
            kwargs["metavar"] = "NAME"
        elif spec.type == "int":
            kwargs["type"] = int
            kwargs["metavar"] = "N"
            kwargs["help"] += f" ({spec.minimum}..{spec.maximum}, default {default})"
        elif spec.type == "bool":  # one flag, the one that turns the switch away from its default
            kwargs["action"] = "store_false" if default else "store_true"
            kwargs["help"] += " (on by default; this flag turns it off)" if default else " (off by default)"
        parser.add_argument(cli_flag(name), **kwargs)


def request_settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """{setting: value} of the options :func:`add_request_args` added."""
    return {name: getattr(args, name) for name in settings_spec()}


def add_settings_args(parser: argparse.ArgumentParser) -> None:
    """--config, --model-dir, --device, --dtype, --output-dir, --commercial-only (the top of the settings stack)."""
    parser.add_argument("--config", help="config TOML (default: $ORBITMESH_CONFIG or the user config dir)")
    parser.add_argument("--model-dir", help="folder holding downloaded/converted models")
    parser.add_argument("--device", choices=DEVICES, help="compute device (default auto)")
    parser.add_argument("--dtype", choices=DTYPES, help="model dtype (default auto)")
    parser.add_argument("--output-dir", help="where job folders are created")
    # Only "on": a config file or environment that sets it cannot be switched off from the command line.
    parser.add_argument("--commercial-only", action="store_const", const=True, default=None,
                        help="refuse models whose licence does not allow commercial use (warn about conditional "
                             "ones); also config key commercial_only / ORBITMESH_COMMERCIAL_ONLY")


def settings_from_args(args: argparse.Namespace) -> Settings:
    return load_settings(getattr(args, "config", None), model_dir=getattr(args, "model_dir", None),
                         device=getattr(args, "device", None), dtype=getattr(args, "dtype", None),
                         output_dir=getattr(args, "output_dir", None),
                         commercial_only=getattr(args, "commercial_only", None))


def console_progress(quiet: bool = False) -> ProgressTracker:
    """A tracker showing progress on stderr: a live bar per stage on a terminal, throttled lines otherwise
    (:class:`orbitmesh.cli.console.ConsoleProgress`; end it with :func:`end_progress`)."""
    from orbitmesh.cli.console import ConsoleProgress

    return ProgressTracker(listener=None if quiet else ConsoleProgress())


def end_progress(tracker: ProgressTracker, *, completed: bool) -> None:
    """Close the console display of ``tracker`` (the last bar at 100 % when the job completed)."""
    close = getattr(tracker.listener, "close", None)
    if close is not None:
        close(completed=completed)
