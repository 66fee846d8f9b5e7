"""``orbitmesh convert-sv3d IN.safetensors OUT_DIR``: SGM SV3D checkpoint -> diffusers-style folder."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("convert-sv3d", help="convert an SV3D checkpoint (sv3d_p/sv3d_u.safetensors) to a folder",
                            description="Convert an SGM SV3D checkpoint into a folder with unet/ (diffusers "
                                        "UNetSpatioTemporalConditionModel layout), vae/ (AutoencoderKL), "
                                        "image_encoder/ (CLIPVisionModelWithProjection) and sv3d.json.")
    parser.add_argument("checkpoint", help="sv3d_p.safetensors or sv3d_u.safetensors")
    parser.add_argument("out_dir", help="output folder (replaced if it exists)")
    parser.add_argument("--variant", choices=("sv3d_p", "sv3d_u"), help="fail unless the checkpoint is this variant")
    parser.add_argument("--num-head-channels", type=int, default=64,
                        help="attention head size of the UNet (SV3D: 64; not stored in the weights)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from orbitmesh.models.video.convert import convert_checkpoint

    info = convert_checkpoint(args.checkpoint, args.out_dir, expected=args.variant,
                              num_head_channels=args.num_head_channels)
    cfg = info["sgm_unet_config"]
    print(f"converted {info['source']} ({info['variant']}, UNet {cfg['model_channels']} channels x "
          f"{cfg['channel_mult']}) to {args.out_dir}")
    return 0
