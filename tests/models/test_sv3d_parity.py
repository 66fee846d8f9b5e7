"""SV3D UNet reference parity (shared fixture) and the sampler/conditioning math."""

from __future__ import annotations

import json
import math

import pytest
import torch

from orbitmesh.models.video.conditioning import vector_conditioning
from orbitmesh.models.video.sampler import edm_sigmas, triangle_scales, v_scaling_edm_c_noise

FIXTURE = "sv3d_unet_reference_tiny.safetensors"


def test_fixture_parity_within_1e4(fixtures_dir):
    from orbitmesh.models.video.parity import run_fixture

    errors = run_fixture(fixtures_dir / FIXTURE)
    assert set(errors) >= {"y", "unet_output", "denoised"}
    for name, err in errors.items():
        assert err <= 1e-4, f"{name}: max abs error {err:.3e}"


def test_verify_reference_cli_dispatches_to_sv3d(fixtures_dir, capsys):
    from orbitmesh.cli import main

    assert main(["verify-reference", str(fixtures_dir / FIXTURE), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["max_abs_error"]["denoised"] <= 1e-4


def test_config_derived_from_weights_matches_fixture_metadata(fixtures_dir):
    from orbitmesh.models.video.convert import UNET_PREFIX, read_checkpoint, sgm_unet_config_from_state_dict

    tensors, meta = read_checkpoint(fixtures_dir / FIXTURE)
    ref = json.loads(meta["unet_config"])
    sd = {k[len(UNET_PREFIX):]: v for k, v in tensors.items() if k.startswith(UNET_PREFIX)}
    got = sgm_unet_config_from_state_dict(sd, num_head_channels=ref["num_head_channels"])
    for key in ("in_channels", "out_channels", "model_channels", "num_res_blocks", "channel_mult",
                "context_dim", "adm_in_channels", "extra_ff_mix_layer", "use_spatial_context",
                "use_linear_in_transformer", "video_kernel_size", "transformer_depth"):
        assert got[key] == ref[key], key
    assert sorted(got["attention_resolutions"]) == sorted(ref["attention_resolutions"])


def test_diffusers_block_types_follow_attention_resolutions():
    from orbitmesh.models.video.convert import diffusers_unet_config
    from orbitmesh.models.video.tiny import SV3D_P_SGM_CONFIG, TINY_SGM_CONFIG

    full = diffusers_unet_config(SV3D_P_SGM_CONFIG)
    assert full["down_block_types"] == ["CrossAttnDownBlockSpatioTemporal"] * 3 + ["DownBlockSpatioTemporal"]
    assert full["up_block_types"] == ["UpBlockSpatioTemporal"] + ["CrossAttnUpBlockSpatioTemporal"] * 3
    assert full["block_out_channels"] == [320, 640, 1280, 1280]
    assert full["num_attention_heads"] == [5, 10, 20, 20]  # 64-channel heads
    assert full["projection_class_embeddings_input_dim"] == 1280
    tiny = diffusers_unet_config(TINY_SGM_CONFIG)
    assert tiny["down_block_types"][-1] == "DownBlockSpatioTemporal" and tiny["block_out_channels"] == [32, 64, 64]


def test_vector_conditioning_layout():
    f = 4
    y = vector_conditioning(torch.full((f,), 1e-5), torch.full((f,), 1.2), torch.linspace(0, 3, f))
    assert y.shape == (f, 1280)
    # sinusoid [cos, sin]: at 0 the cos half is 1 and the sin half 0
    zero = vector_conditioning(torch.zeros(1), torch.zeros(1), torch.zeros(1))[0]
    assert torch.equal(zero[:128], torch.ones(128)) and torch.equal(zero[128:256], torch.zeros(128))
    # the azimuth block is the last 512 numbers: its first cos is cos(azimuth)
    assert y[2, 1280 - 512].item() == pytest.approx(math.cos(2.0), abs=1e-6)
    assert vector_conditioning(torch.zeros(3)).shape == (3, 256)
    with pytest.raises(ValueError):
        vector_conditioning(torch.zeros(3), torch.zeros(3), None)


def test_edm_sigmas_and_denoiser_scaling():
    s = edm_sigmas(50)
    assert s.shape == (51,) and s[0].item() == pytest.approx(700.0, rel=1e-5)
    assert s[-2].item() == pytest.approx(0.002, rel=1e-4) and s[-1].item() == 0.0
    assert bool((s[1:] < s[:-1]).all())
    sc = v_scaling_edm_c_noise(torch.tensor([1.0, 700.0]))
    assert sc.c_skip[0].item() == pytest.approx(0.5) and sc.c_out[0].item() == pytest.approx(-1 / math.sqrt(2))
    assert sc.c_noise[1].item() == pytest.approx(0.25 * math.log(700.0))


def test_triangle_guidance_scales():
    s = triangle_scales(21, 1.0, 2.5)
    assert s[0].item() == pytest.approx(1.0) and s[-1].item() == pytest.approx(1.0)
    assert s[10].item() == pytest.approx(2.5)
    assert torch.allclose(s, s.flip(0)) and bool((s[1:11] > s[:10]).all())
