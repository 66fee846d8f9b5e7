"""SGM SV3D checkpoint conversion: round trip of a tiny random checkpoint, the folder, wrong files."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from orbitmesh.errors import ModelError
from orbitmesh.models.video import convert as C
from orbitmesh.models.video.tiny import TINY_SGM_CONFIG, tiny_sgm_checkpoint


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    ckpt, modules = tiny_sgm_checkpoint(seed=3)
    return ckpt, modules


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory, tiny):
    path = tmp_path_factory.mktemp("sv3d") / "sv3d_p_tiny.safetensors"
    save_file(tiny[0], str(path), metadata={"unet_config": json.dumps(TINY_SGM_CONFIG)})
    return path


def _unet_inputs(frames=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(1, frames, 8, 8, 8, generator=g), torch.full((frames,), 0.3),
            torch.randn(1, 1, 32, generator=g), torch.randn(frames, 1280, generator=g))


def test_unet_round_trip_is_exact(tiny):
    ckpt, (unet, _, _) = tiny
    sd = {k[len(C.UNET_PREFIX):]: v for k, v in ckpt.items() if k.startswith(C.UNET_PREFIX)}
    converted = C.unet_from_sgm(sd, num_head_channels=16)
    ref = unet.state_dict()
    got = converted.state_dict()
    assert set(ref) == set(got) and all(torch.equal(ref[k], got[k]) for k in ref)
    x, t, ctx, y = _unet_inputs()
    with torch.no_grad():
        a = unet(x, t, ctx, y).sample
        b = converted(x, t, ctx, y).sample
    assert a.shape == (1, 3, 4, 8, 8) and torch.equal(a, b)


def test_unet_conditioning_is_per_frame(tiny):
    unet = tiny[1][0]
    x, t, ctx, y = _unet_inputs()
    with torch.no_grad():
        base = unet(x, t, ctx, y).sample
        per_frame_ctx = unet(x, t, ctx.repeat_interleave(3, 0), y).sample
        y2 = y.clone()
        y2[1] += 1.0
        changed = unet(x, t, ctx, y2).sample
    assert torch.allclose(base, per_frame_ctx, atol=1e-6)
    assert not torch.allclose(base[:, 1], changed[:, 1])
    with pytest.raises(ValueError, match="1280"):
        unet(x, t, ctx, y[:, :256])


def test_vae_and_clip_round_trip_and_temporal_decoder_layers_ignored(tiny):
    ckpt, (_, vae, clip) = tiny
    assert any("time_mix" in k for k in ckpt)  # the SGM VideoDecoder extras are present ...
    vae2, clip2 = C.vae_from_checkpoint(ckpt), C.clip_from_checkpoint(ckpt)  # ... and skipped
    g = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, 64, 64, generator=g) * 2 - 1
    z = torch.randn(2, 4, 8, 8, generator=g)
    pixels = torch.randn(2, 3, 28, 28, generator=g)
    with torch.no_grad():
        assert torch.equal(vae.encode(image).latent_dist.mode(), vae2.encode(image).latent_dist.mode())
        assert torch.equal(vae.decode(z).sample, vae2.decode(z).sample)
        assert torch.equal(clip(pixel_values=pixels).image_embeds, clip2(pixel_values=pixels).image_embeds)
    assert vae2.config.use_post_quant_conv is False and vae2.config.scaling_factor == pytest.approx(0.18215)


def test_convert_cli_writes_folder_that_loads_back(tiny, tiny_file, tmp_path):
    from orbitmesh.cli import main
    from orbitmesh.models.video.pipeline import SV3DPipeline

    out = tmp_path / "sv3d_p"
    assert main(["convert-sv3d", str(tiny_file), str(out), "--variant", "sv3d_p"]) == 0
    assert {p.name for p in out.iterdir()} == {"unet", "vae", "image_encoder", "sv3d.json"}
    info = json.loads((out / "sv3d.json").read_text())
    assert info["variant"] == "sv3d_p" and info["sgm_unet_config"]["model_channels"] == 32
    from_folder = SV3DPipeline.from_pretrained(out)
    from_file = SV3DPipeline.from_pretrained(tiny_file)
    x, t, ctx, y = _unet_inputs(seed=5)
    with torch.no_grad():
        ref = tiny[1][0](x, t, ctx, y).sample
        assert torch.equal(from_folder.unet(x, t, ctx, y).sample, ref)
        assert torch.equal(from_file.unet(x, t, ctx, y).sample, ref)
    assert from_folder.variant == "sv3d_p" and from_folder.has_cameras


def test_lrm_checkpoint_is_rejected_with_what_it_is(fixtures_dir, tmp_path):
    with pytest.raises(ModelError) as err:
        C.convert_checkpoint(fixtures_dir / "lrm_reference_tiny.safetensors", tmp_path / "out")
    assert "LRM" in err.value.message and "expected" in err.value.message and err.value.fix
    assert not (tmp_path / "out").exists()


def test_truncated_file_is_rejected(tiny_file, tmp_path):
    cut = tmp_path / "sv3d_p.safetensors"
    cut.write_bytes(tiny_file.read_bytes()[: tiny_file.stat().st_size // 2])
    with pytest.raises(ModelError) as err:
        C.convert_checkpoint(cut, tmp_path / "out")
    assert "truncated" in err.value.message and "sv3d_p.safetensors" in err.value.message


def test_svd_checkpoint_for_sv3d_p_is_rejected(tiny, tmp_path):
    from orbitmesh.models.video.pipeline import SV3DPipeline

    ckpt = dict(tiny[0])
    key = C.UNET_PREFIX + "label_emb.0.0.weight"
    ckpt[key] = torch.zeros(ckpt[key].shape[0], 768)  # SVD: fps/motion/cond_aug, no camera
    path = tmp_path / "svd.safetensors"
    save_file(ckpt, str(path))
    with pytest.raises(ModelError) as err:
        SV3DPipeline.from_pretrained(path, variant="sv3d_p")
    assert "Stable Video Diffusion" in err.value.message and "no camera" in err.value.message
    assert "sv3d_p" in err.value.message


def test_sv3d_u_given_where_sv3d_p_expected(tiny, tmp_path):
    ckpt = dict(tiny[0])
    key = C.UNET_PREFIX + "label_emb.0.0.weight"
    ckpt[key] = torch.zeros(ckpt[key].shape[0], 256)
    path = tmp_path / "sv3d_u.safetensors"
    save_file(ckpt, str(path))
    with pytest.raises(ModelError, match="sv3d_u.*expected an SV3D sv3d_p"):
        C.convert_checkpoint(path, tmp_path / "out", expected="sv3d_p")


def test_missing_weight_names_the_key(tiny):
    sd = {k[len(C.UNET_PREFIX):]: v for k, v in tiny[0].items() if k.startswith(C.UNET_PREFIX)}
    sd.pop("middle_block.0.time_mixer.mix_factor")
    with pytest.raises(ModelError, match="mid_block.resnets.0.time_mixer.mix_factor"):
        C.unet_from_sgm(sd, TINY_SGM_CONFIG)


def test_gated_hub_error_explains_licence_and_token(monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError

    from orbitmesh.models.video import pipeline

    def refuse(*args, **kwargs):  # what the hub client raises for a gated repo without access
        raise GatedRepoError("403 gated", response=SimpleNamespace(headers={}, request=None, status_code=403))

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    with pytest.raises(ModelError) as err:
        pipeline.SV3DPipeline.from_pretrained("stabilityai/sv3d", variant="sv3d_p")
    assert "gated" in err.value.message and "licence" in err.value.fix and "token" in err.value.fix
