"""SV3D orbit on the CPU keeps its memory down at no cost in time: the two guidance branches run one after the
other (the batched pair doubles the activations: several GB at full size next to ~9 GB of float32 weights) and
frames decode at most CPU_DECODE_CHUNK at a time; the frames are those of the batched path."""

from __future__ import annotations

import numpy as np
import pytest

from orbitmesh.models.video.pipeline import SV3DPipeline
from orbitmesh.models.video.tiny import tiny_modules
from orbitmesh.pipeline import orbit
from orbitmesh.pipeline.orbit import OrbitConfig, generate_orbit


@pytest.fixture()
def calls(monkeypatch):
    """A tiny CPU pipeline whose UNet records the videos per call and whose VAE records the frames per decode."""
    unet, vae, clip = tiny_modules(seed=1)
    pipe = SV3DPipeline(unet, vae, clip)
    seen = {"unet": [], "decode": []}
    unet_forward, vae_decode = unet.forward, vae.decode

    def forward(sample, *args, **kwargs):
        seen["unet"].append(sample.shape[0])
        return unet_forward(sample, *args, **kwargs)

    def decode(z, *args, **kwargs):
        seen["decode"].append(z.shape[0])
        return vae_decode(z, *args, **kwargs)

    monkeypatch.setattr(unet, "forward", forward)
    monkeypatch.setattr(vae, "decode", decode)
    return pipe, seen


def test_cpu_runs_branches_one_by_one_and_decodes_in_small_chunks(calls, object_image, monkeypatch):
    pipe, seen = calls
    cfg = OrbitConfig(steps=2, num_frames=5, size=64, seed=3, replace_last_frame=False)  # decode_chunk 7
    small = np.stack([np.asarray(f, np.int16) for f in generate_orbit(pipe, object_image(64), cfg).frames])
    assert seen["unet"] == [1, 1, 1, 1]  # 2 steps x (uncond, cond), one video per call
    assert seen["decode"] == [2, 2, 1] and max(seen["decode"]) <= orbit.CPU_DECODE_CHUNK
    seen["unet"].clear(), seen["decode"].clear()
    monkeypatch.setattr(orbit, "low_memory_path", lambda pipe: False)  # the batched path, as on a GPU
    monkeypatch.setattr(orbit, "decode_chunk", lambda pipe, cfg: cfg.decode_chunk)
    batched = np.stack([np.asarray(f, np.int16) for f in generate_orbit(pipe, object_image(64), cfg).frames])
    assert seen["unet"] == [2, 2] and seen["decode"] == [5]
    assert np.abs(small - batched).max() <= 1


def test_accelerators_keep_the_batched_branches_and_the_chunk():
    class Pipe:
        device, offload = "cuda", False

    cfg = OrbitConfig(decode_chunk=7)
    assert orbit.low_memory_path(Pipe()) is False and orbit.decode_chunk(Pipe(), cfg) == 7
    Pipe.offload = True
    assert orbit.low_memory_path(Pipe()) is True
    Pipe.device = "cpu"
    assert orbit.decode_chunk(Pipe(), cfg) == orbit.CPU_DECODE_CHUNK
