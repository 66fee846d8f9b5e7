"""A tiny random text-to-image pipeline for CPU tests and dry runs: a StableDiffusionPipeline with a random UNet and
text encoder, a byte-level CLIP tokenizer that knows the prompt template's words, and a decoder set by hand to draw
the latents as a textured object on white (so the stages after text-to-image get an object, as from a real model).
"""

from __future__ import annotations

import json
from pathlib import Path

from orbitmesh.pipeline.prompting import NEGATIVE_PROMPT, PROMPT_TEMPLATE


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-level alphabet: every byte maps to one printable character."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def write_tiny_bpe(folder: Path, words: list[str]) -> int:
    """vocab.json + merges.txt: the 256 byte symbols (plain and word-final) plus merges that
    build each of ``words`` into one token, and CLIP's start/end tokens. Returns the vocab size."""
    symbols = list(_bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    merges: dict[str, None] = {}
    for word in words:
        parts = list(word)
        parts[-1] += "</w>"
        while len(parts) > 1:
            merges[f"{parts[0]} {parts[1]}"] = None
            parts = [parts[0] + parts[1]] + parts[2:]
            vocab.setdefault(parts[0], len(vocab))
    for special in ("<|startoftext|>", "<|endoftext|>"):
        vocab[special] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    return len(vocab)


def object_decoder_vae():
    """A tiny AutoencoderKL whose decoder is set by hand (not trained, not random) to draw the
    latents as a textured object centred on a white background, so that the image stages after
    text-to-image (background removal, LRM) get an object, as they would from a real model.

    How: post_quant_conv makes channel 0 a constant canvas and passes latent channels 1-3 on;
    every 3x3 conv on the decoder's main path box-filters the canvas, and their zero padding
    darkens it towards the border; resnet/attention branches are zero (identity); conv_out
    thresholds the canvas (inside: object colour + latent texture; border ring: white).
    The UNet and the text encoder stay random, so the texture still depends on prompt and seed.
    """
    import torch
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(in_channels=3, out_channels=3, block_out_channels=(32, 32, 32), latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                        layers_per_block=1, norm_num_groups=32, sample_size=64, scaling_factor=1.0)
    dec, post = vae.decoder, vae.post_quant_conv
    with torch.no_grad():
        for p in list(dec.parameters()) + list(post.parameters()):
            p.zero_()
        post.bias[0] = 1.0
        for c in (1, 2, 3):
            post.weight[c, c, 0, 0] = 1.0
        for conv in [dec.conv_in] + [b.upsamplers[0].conv for b in dec.up_blocks if b.upsamplers]:
            conv.weight[0, 0] = 1.0 / 9.0
            for c in (1, 2, 3):
                conv.weight[c, c, 1, 1] = 1.0
        dec.conv_norm_out.weight.fill_(1.0)  # one channel per group: each channel normalised alone
        dec.conv_norm_out.weight[0], dec.conv_norm_out.bias[0] = 0.3, 3.0  # keep SiLU monotonic on the canvas
        # The canvas feature conv_out sees, for the native 16x16 latent (it does not depend on the latents).
        x = dec.conv_in(post(torch.zeros(1, 4, 16, 16)))
        x = dec.mid_block(x)
        for block in dec.up_blocks:
            x = block(x)
        canvas = dec.conv_act(dec.conv_norm_out(x))[0, 0]
        inside = canvas.max().item()
        ring = canvas[canvas < inside - 1e-3].max().item()
        k = 1.6 / (inside - ring)
        for c, colour in enumerate((0.3, 0.0, -0.3)):  # brown object, texture from latent channel c + 1
            dec.conv_out.weight[c, 0, 1, 1] = -k
            dec.conv_out.weight[c, c + 1, 1, 1] = 0.15
            dec.conv_out.bias[c] = 1.2 + k * ring + colour
    return vae


def build_tiny_pipeline(folder: str | Path, extra_words: str = "") -> Path:
    """A StableDiffusionPipeline small enough for CPU tests (random UNet and text encoder, the
    hand-set object decoder above, 64x64 images), saved to ``folder`` (returned); its tokenizer knows the prompt
    template's words and ``extra_words`` as single tokens."""
    import torch
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    folder = Path(folder)
    words = sorted({w for text in (PROMPT_TEMPLATE, NEGATIVE_PROMPT, extra_words)
                    for w in text.replace("{prompt}", "").replace(",", " ").lower().split()})
    vocab_size = write_tiny_bpe(folder.parent / "bpe", words)
    tokenizer = CLIPTokenizer.from_pretrained(folder.parent / "bpe", model_max_length=77)
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
        max_position_embeddings=77, projection_dim=32, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    unet = UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, block_out_channels=(32, 64), layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=32)
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                       steps_offset=1)
    pipe = StableDiffusionPipeline(unet=unet, vae=object_decoder_vae(), text_encoder=text_encoder,
                                   tokenizer=tokenizer, scheduler=scheduler, safety_checker=None,
                                   feature_extractor=None, image_encoder=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder
