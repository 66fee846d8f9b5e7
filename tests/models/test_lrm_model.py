"""VFusion3D LRM: reference parity, checkpoint loading/saving, key mapping, errors."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file, save_file

from orbitmesh.cli import main
from orbitmesh.errors import ModelError
from orbitmesh.models.lrm import LRM, LRMConfig, tiny
from orbitmesh.models.lrm.loading import infer_config, load_into, map_dino_keys
from orbitmesh.models.lrm.parity import run_fixture

FIXTURE = "lrm_reference_tiny.safetensors"


def _small(**kw) -> LRMConfig:
    return replace(tiny(), **kw)


def _model(seed: int = 0, config: LRMConfig | None = None) -> LRM:
    torch.manual_seed(seed)
    return LRM(config or tiny()).eval()


def _outputs(model: LRM, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(1, 3, model.config.input_size, model.config.input_size, generator=g)
    points = torch.rand(1, 50, 3, generator=g) * 2 - 1
    with torch.no_grad():
        planes = model(image)
        return {"planes": planes, **model.query_points(planes, points)}


def _reference_names(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our state dict under transformers-4 Dinov2 names, as the reference checkpoints have them."""
    return map_dino_keys(sd, {"encoder.model.encoder.layer.0.attention.attention.query.weight"})


# -- parity ---------------------------------------------------------------------------------------------
def test_parity_with_reference_fixture(fixtures_dir):
    errors = run_fixture(fixtures_dir / FIXTURE)
    assert set(errors) == {"out.planes", "out.points_rgb", "out.points_sigma", "out.grid_rgb", "out.grid_sigma",
                           "out.images_rgb", "out.images_depth", "out.images_weight"}
    assert max(errors.values()) <= 1e-4, errors


def test_verify_reference_cli_pass_and_fail(fixtures_dir, tmp_path, capsys):
    assert main(["verify-reference", str(fixtures_dir / FIXTURE)]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "out.images_rgb" in out
    # A fixture whose reference output is off by 1e-3 must fail, naming the output.
    tensors = load_file(str(fixtures_dir / FIXTURE))
    from safetensors import safe_open

    with safe_open(str(fixtures_dir / FIXTURE), "pt") as f:
        meta = f.metadata()
    tensors["out.points_rgb"] = tensors["out.points_rgb"] + 1e-3
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata=meta)
    assert main(["verify-reference", str(bad), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["max_abs_error"]["out.points_rgb"] > 9e-4
    assert report["max_abs_error"]["out.planes"] <= 1e-4


def test_verify_reference_any_tiny_config(tmp_path, capsys):
    """A fixture for another configuration (written under reference key names) verifies too."""
    cfg = _small(transformer_layers=1, transformer_heads=2, camera_embed_dim=24, triplane_dim=6, samples_per_ray=8,
                 encoder=replace(tiny().encoder, num_hidden_layers=1, num_attention_heads=2, hidden_size=32))
    model = _model(3, cfg)
    g = torch.Generator().manual_seed(0)
    inputs = {"in.image": torch.rand(1, 3, 70, 70, generator=g), "in.source_camera": model.default_source_camera(),
              "in.points": torch.rand(1, 30, 3, generator=g) * 2 - 1}
    from orbitmesh.models.lrm.camera import orbit_cameras
    from orbitmesh.models.lrm.parity import compute_outputs

    inputs["in.render_cameras"] = orbit_cameras(2, radius=1.5).unsqueeze(0)
    meta = {"generator_config": json.dumps({
        "camera_embed_dim": 24, "rendering_samples_per_ray": 8, "transformer_dim": 64, "transformer_layers": 1,
        "transformer_heads": 2, "triplane_low_res": 4, "triplane_high_res": 8, "triplane_dim": 6,
        "encoder_feat_dim": 32}),
        "encoder_config": json.dumps({"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
                                      "mlp_ratio": 4, "patch_size": 14, "image_size": 98}),
        "grid_size": "5", "render_size": "4"}
    outs = compute_outputs(model, inputs, meta)
    weights = {f"model.{k}": v for k, v in _reference_names(model.state_dict()).items()}
    path = tmp_path / "other.safetensors"
    save_file({**weights, **inputs, **{k: v.contiguous() for k, v in outs.items()}}, str(path), metadata=meta)
    assert main(["verify-reference", str(path)]) == 0
    assert "out.images_depth" in capsys.readouterr().out


def test_verify_reference_rejects_unknown_file(tmp_path, capsys):
    path = tmp_path / "x.safetensors"
    save_file({"a": torch.zeros(1)}, str(path), metadata={"foo": "bar"})
    assert main(["verify-reference", str(path)]) == 2
    assert "generator_config" in capsys.readouterr().err


def test_render_deterministic_and_sampled():
    from orbitmesh.models.lrm.camera import orbit_cameras

    model = _model(0)
    cams = orbit_cameras(2).unsqueeze(0)
    with torch.no_grad():
        planes = model(torch.rand(1, 3, 112, 112))
        a = model.render(planes, cams, 6, deterministic=True)
        b = model.render(planes, cams, 6, deterministic=True)
        c = model.render(planes, cams, 6, generator=torch.Generator().manual_seed(0))
    assert a["images_rgb"].shape == (1, 2, 3, 6, 6) and a["images_depth"].shape == (1, 2, 1, 6, 6)
    assert torch.equal(a["images_rgb"], b["images_rgb"])
    assert not torch.equal(a["images_depth"], c["images_depth"])
    assert float(a["images_weight"].min()) >= 0 and float(a["images_weight"].max()) <= 1 + 1e-5


# -- loading ----------------------------------------------------------------------------------------------
def test_save_pretrained_round_trip(tmp_path):
    model = _model(0)
    model.save_pretrained(tmp_path / "m")
    assert {p.name for p in (tmp_path / "m").iterdir()} == {"config.json", "model.safetensors"}
    for source in (tmp_path / "m", tmp_path / "m" / "model.safetensors"):
        loaded = LRM.from_pretrained(source, local_files_only=True, dtype=torch.float32, device="cpu")
        assert loaded.config == model.config
        a, b = _outputs(model), _outputs(loaded)
        for k in a:
            assert torch.equal(a[k], b[k]), k


def test_reference_checkpoint_names_load(tmp_path):
    """The GitHub torch checkpoint (model_state_dict, transformers-4 Dinov2 names) loads and matches."""
    model = _model(0)
    ref = _reference_names(model.state_dict())
    assert any(".attention.attention.query." in k for k in ref)
    torch.save({"model_state_dict": ref, "epoch": 1}, tmp_path / "vfusion3d.pth")
    loaded = LRM.from_pretrained(tmp_path / "vfusion3d.pth", config=model.config)
    a, b = _outputs(model), _outputs(loaded)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_config_inferred_from_tensors(fixtures_dir):
    tensors = load_file(str(fixtures_dir / FIXTURE))
    from orbitmesh.models.lrm.loading import to_model_keys

    sd = to_model_keys({k: v for k, v in tensors.items() if k.startswith("model.")},
                       set(_model(0).state_dict()))
    cfg = infer_config(sd)
    assert (cfg.transformer_dim, cfg.transformer_layers, cfg.triplane_low_res, cfg.triplane_high_res,
            cfg.triplane_dim, cfg.camera_embed_dim) == (64, 2, 4, 8, 8, 32)
    assert (cfg.encoder.hidden_size, cfg.encoder.num_hidden_layers, cfg.encoder.image_size) == (48, 2, 98)


def test_hub_id_from_local_cache(tmp_path, hub_snapshot):
    """A hub id resolves through the huggingface_hub cache; local_files_only never touches the network."""
    model = _model(0)
    model.save_pretrained(hub_snapshot(tmp_path, "facebook/vfusion3d", "a" * 40))
    from orbitmesh.models.lrm.loading import from_pretrained

    loaded = from_pretrained("facebook/vfusion3d", local_files_only=True, cache_dir=tmp_path)
    assert torch.equal(_outputs(model)["planes"], _outputs(loaded)["planes"])
    with pytest.raises(ModelError, match="not in the local cache"):
        from_pretrained("facebook/vfusion3d", local_files_only=True, cache_dir=tmp_path / "empty")


def test_wrong_shape_and_missing_key_are_named():
    model = _model(0)
    sd = model.state_dict()
    bad = dict(sd)
    bad["transformer.deconv.weight"] = torch.zeros(3, 3, 2, 2)
    with pytest.raises(ModelError, match=r"transformer\.deconv\.weight: checkpoint \(3, 3, 2, 2\)"):
        load_into(model.config, bad)
    missing = {k: v for k, v in sd.items() if k != "synthesizer.decoder.net.2.bias"}
    with pytest.raises(ModelError, match=r"missing keys: synthesizer\.decoder\.net\.2\.bias"):
        load_into(model.config, missing)
    extra = {**sd, "transformer.extra": torch.zeros(1)}
    with pytest.raises(ModelError, match=r"unexpected keys: transformer\.extra"):
        load_into(model.config, extra)


def test_bad_sources_are_clear(tmp_path):
    with pytest.raises(ModelError, match="model not found"):
        LRM.from_pretrained(tmp_path / "nothing.safetensors")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no weights"):
        LRM.from_pretrained(tmp_path / "empty")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a safetensors file")
    with pytest.raises(ModelError, match="cannot read"):
        LRM.from_pretrained(broken)


def test_vfusion3d_preset_sizes():
    """The full-size config builds on the meta device with the released model's parameter count."""
    from orbitmesh.models.lrm import vfusion3d
    from orbitmesh.models.lrm.loading import build

    model = build(vfusion3d(), meta=True)
    sd = model.state_dict()
    assert sd["transformer.pos_embed"].shape == (1, 3 * 32 * 32, 1024)
    assert sd["transformer.deconv.weight"].shape == (1024, 80, 2, 2)
    assert sd["transformer.layers.15.cross_attn.k_proj_weight"].shape == (1024, 768)
    assert sd["encoder.model.embeddings.position_embeddings"].shape == (1, 37 * 37 + 1, 768)
    assert sd["synthesizer.decoder.net.0.weight"].shape == (64, 240)
    n = sum(p.numel() for p in model.parameters())
    assert 440e6 < n < 460e6, n


# -- pixel-aligned token lifting (the preview model's option) ------------------------------------------
def test_lifting_projection_matches_the_renderers_rays():
    """A point on the ray through pixel (u, v) of a source camera projects back onto (u, v)."""
    from orbitmesh.data.render import orbit_camera, pixel_rays
    from orbitmesh.models.lrm.lifting import project_points

    c2w = orbit_camera(12.0, -7.0, 1.1)
    u, v = torch.tensor([0.1, 0.65, 0.5, 0.93]), torch.tensor([0.25, 0.8, 0.5, 0.05])
    origins, dirs = pixel_rays(c2w, (0.8, 0.7, 0.52, 0.48), u, v)
    camera = torch.cat([c2w.reshape(12), torch.tensor([0.8, 0.7, 0.52, 0.48])])[None]
    coords, front = project_points(origins + 0.9 * dirs, camera)
    assert front.all()
    assert torch.allclose((coords[0] + 1) / 2, torch.stack([u, v], dim=-1), atol=1e-5)
    behind, front = project_points(origins - 0.5 * dirs, camera)
    assert not front.any()


def test_lifting_tokens_follow_the_image_and_round_trip(tmp_path):
    """With lifting, planes depend on where the object is in the image from the first step, the
    option is off in VFusion3D's config (no extra keys), and save/load is exact."""
    from orbitmesh.models.lrm import vfusion3d

    assert vfusion3d().lift_samples == 0 and _model(0).lifting is None
    config = _small(lift_samples=4, lift_stem_dim=8)
    model = _model(0, config)
    keys = set(model.state_dict())
    assert any(k.startswith("lifting.proj.2") for k in keys) and any(k.startswith("lifting.stem") for k in keys)
    size = config.input_size
    left, right = torch.ones(1, 3, size, size), torch.ones(1, 3, size, size)
    left[..., size // 4:size // 2, size // 8:size // 3] = 0.1
    right[..., size // 4:size // 2, 2 * size // 3:7 * size // 8] = 0.1
    with torch.no_grad():
        tokens_l = model.lifting(left, model.encoder(left)[:, 1:], model.default_source_camera())
        tokens_r = model.lifting(right, model.encoder(right)[:, 1:], model.default_source_camera())
    r = config.triplane_low_res
    # Source camera at +x: image right is world +y. On the xy plane (plane 0, x = columns,
    # y = rows) the dark patch moves across token rows; on the zy plane (plane 2) too.
    diff = (tokens_l - tokens_r).norm(dim=-1).view(3, r, r)
    assert diff[0].sum(dim=1)[: r // 2].sum() > 0 and diff[0].sum(dim=1)[r // 2:].sum() > 0
    assert diff.max() > 1e-3
    model.save_pretrained(tmp_path / "lifted")
    loaded = LRM.from_pretrained(tmp_path / "lifted", local_files_only=True, dtype=torch.float32, device="cpu")
    assert loaded.config.lift_samples == 4
    a, b = _outputs(model), _outputs(loaded)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_plane_refiner_and_stem_context_blocks():
    """The refiner adds image detail at plane resolution; it and the context blocks start as
    identities (zero last convs), need lifting, and save/load exactly."""
    import pytest

    from orbitmesh.errors import ModelError

    with pytest.raises(ModelError, match="lift_samples"):
        _small(refine_dim=8)
    config = _small(lift_samples=4, lift_stem_dim=8, lift_stem_blocks=2, refine_dim=8)
    model = _model(0, config)
    plain = _model(0, _small(lift_samples=4, lift_stem_dim=8))
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k in plain.state_dict()})
    a, b = _outputs(model), _outputs(plain)
    assert torch.equal(a["planes"], b["planes"])  # identities at initialisation
    with torch.no_grad():  # once the refiner's head is nonzero, a small dark dot changes the planes
        model.refiner.out.weight.normal_(std=0.1)
        model.lifting.stem.context[1].conv2.weight.normal_(std=0.1)
        size = config.input_size
        image = torch.ones(1, 3, size, size)
        dotted = image.clone()
        dotted[..., size // 2 - 2:size // 2 + 2, size // 2 - 2:size // 2 + 2] = 0.0
        diff = (model(image) - model(dotted)).abs().amax(dim=2)  # (1, 3, R, R)
    r = config.triplane_high_res
    # Camera at +x: the image centre is the line y = z = 0; the zy plane (2) sees it at its centre texels.
    centre = diff[0, 2, r // 2 - 1:r // 2 + 1, r // 2 - 1:r // 2 + 1].mean()
    assert centre > 1e-4 and centre > diff[0, 2, :2, :2].mean()
