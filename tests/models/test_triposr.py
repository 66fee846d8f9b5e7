"""TripoSR: reference parity, the released folder layout (both ViT namings), our own folders, config and key errors."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from orbitmesh.cli import main
from orbitmesh.errors import ModelError
from orbitmesh.models.triposr import TripoSR, TripoSRConfig, tiny, triposr
from orbitmesh.models.triposr.config import (
    RELEASED_CONFIG_YAML,
    BackboneConfig,
    DecoderConfig,
    ImageTokenizerConfig,
    PostProcessorConfig,
    RendererConfig,
    TokenizerConfig,
    folder_layout,
    resolve_interpolations,
)
from orbitmesh.models.triposr.loading import (
    build,
    from_pretrained,
    load_into,
    map_vit_keys,
    released_config_dict,
    save_released,
)
from orbitmesh.models.triposr.parity import compute_outputs, run_fixture

FIXTURE = "triposr_reference_tiny.safetensors"
OUTPUTS = {"out.scene_codes", "out.points_density", "out.points_color", "out.grid_density", "out.grid_color",
           "out.images"}


def _other() -> TripoSRConfig:
    """Another tiny configuration: fields the fixture leaves at their defaults set otherwise (group norm, GELU,
    attention bias, blocks wider than the tokens, mean reduction, softplus density, ReLU decoder)."""
    return TripoSRConfig(
        cond_image_size=48,
        image_tokenizer=ImageTokenizerConfig(vit_config={"hidden_size": 24, "num_hidden_layers": 1,
                                                         "num_attention_heads": 2, "intermediate_size": 40,
                                                         "image_size": 24, "patch_size": 6}),
        tokenizer=TokenizerConfig(plane_size=3, num_channels=16),
        backbone=BackboneConfig(in_channels=16, num_attention_heads=2, attention_head_dim=12, num_layers=2,
                                cross_attention_dim=24, norm_num_groups=8, activation_fn="gelu", attention_bias=True),
        post_processor=PostProcessorConfig(in_channels=16, out_channels=6),
        decoder=DecoderConfig(in_channels=6, n_neurons=8, n_hidden_layers=2, activation="relu", bias_init="zero"),
        renderer=RendererConfig(radius=0.7, feature_reduction="mean", density_activation="softplus",
                                density_bias=0.5, num_samples_per_ray=10),
    )


def _model(config: TripoSRConfig | None = None, seed: int = 0) -> TripoSR:
    torch.manual_seed(seed)
    return TripoSR(config or tiny()).eval()


def _outputs(model: TripoSR, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    size = model.config.cond_image_size
    image = torch.rand(1, 3, size, size, generator=g)
    r = model.config.renderer.radius
    points = (torch.rand(1, 40, 3, generator=g) * 2 - 1) * r
    rays_o = torch.tensor([[[2.0, 0.1, 0.2], [0.0, -2.0, 0.3], [0.0, 0.0, 5.0]]])
    rays_d = torch.nn.functional.normalize(-rays_o + 0.05, dim=-1)
    with torch.no_grad():
        planes = model(image)
        return {"planes": planes, **model.query_points(planes, points),
                **model.render_rays(planes, rays_o, rays_d)}


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


# -- parity ------------------------------------------------------------------------------------------------
def test_parity_with_reference_fixture(fixtures_dir):
    errors = run_fixture(fixtures_dir / FIXTURE)
    assert set(errors) == OUTPUTS
    assert max(errors.values()) <= 1e-4, errors


def test_verify_reference_cli_pass_and_perturbed_fail(fixtures_dir, tmp_path, capsys):
    assert main(["verify-reference", str(fixtures_dir / FIXTURE)]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and all(name in out for name in OUTPUTS)
    tensors = load_file(str(fixtures_dir / FIXTURE))
    with safe_open(str(fixtures_dir / FIXTURE), "pt") as f:
        meta = f.metadata()
    tensors["out.images"] = tensors["out.images"] + 1e-3
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata=meta)
    assert main(["verify-reference", str(bad), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["max_abs_error"]["out.images"] > 9e-4
    assert max(v for k, v in report["max_abs_error"].items() if k != "out.images") <= 1e-4


def test_verify_reference_detects_every_fixture_kind(fixtures_dir):
    from orbitmesh.cli.verify_reference import fixture_kind

    kinds = {"lrm_reference_tiny.safetensors": "lrm", FIXTURE: "triposr",
             "sv3d_unet_reference_tiny.safetensors": "sv3d"}
    for name, kind in kinds.items():
        if (fixtures_dir / name).is_file():
            assert fixture_kind(fixtures_dir / name) == kind


def test_verify_reference_any_tiny_config(tmp_path, capsys):
    """A fixture for another configuration (released config layout, transformers-4 ViT names) verifies too."""
    model = _model(_other(), seed=3)
    g = torch.Generator().manual_seed(0)
    from orbitmesh.models.triposr.renderer import spherical_rays

    rays_o, rays_d = spherical_rays(2, 20.0, 1.9, 40.0, 4, 4)
    inputs = {"in.image": torch.rand(1, 48, 48, 3, generator=g), "in.points": (torch.rand(30, 3, generator=g) - 0.5),
              "in.rays_o": rays_o.contiguous(), "in.rays_d": rays_d.contiguous()}
    config = resolve_interpolations(released_config_dict(model.config))
    del config["image_tokenizer"]["vit_config"]
    meta = {"config": json.dumps(config), "vit_config": json.dumps(model.vit_config), "grid_size": "5"}
    outs = compute_outputs(model, inputs, meta)
    assert set(outs) == OUTPUTS
    weights = {f"model.{k}": v for k, v in map_vit_keys(model.state_dict(), "v4").items()}
    path = tmp_path / "other.safetensors"
    save_file({**weights, **inputs, **{k: v.contiguous() for k, v in outs.items()}}, str(path), metadata=meta)
    assert main(["verify-reference", str(path)]) == 0
    assert "out.grid_density" in capsys.readouterr().out


def test_cameras_and_grid_tables_match_reference(fixtures_dir):
    """Our spherical cameras give the fixture's rays; the factorised grid (GridTables) gives its grid density."""
    from orbitmesh.models.triposr.parity import model_from_fixture
    from orbitmesh.models.triposr.renderer import spherical_rays

    tensors = load_file(str(fixtures_dir / FIXTURE))
    with safe_open(str(fixtures_dir / FIXTURE), "pt") as f:
        meta = f.metadata()
    rays_o, rays_d = spherical_rays(4, 20.0, 1.9, 40.0, 8, 8)
    assert (rays_o - tensors["in.rays_o"]).abs().max() < 1e-6
    assert (rays_d - tensors["in.rays_d"]).abs().max() < 1e-6
    model = model_from_fixture(tensors, meta)
    with torch.no_grad():
        planes = model(tensors["in.image"].permute(0, 3, 1, 2))
        r = int(meta["grid_size"])
        axis = torch.linspace(model.config.bbox_min, model.config.bbox_max, r)
        tables = model.grid_tables(planes, (axis, axis, axis))
        i, j, k = (t.reshape(-1) for t in torch.meshgrid(*[torch.arange(r)] * 3, indexing="ij"))
        density = tables.density(i, j, k).reshape(r, r, r)
        images = model.render(planes, 4, elevation_deg=20.0, size=8)
    ref = tensors["out.grid_density"]
    assert float(((density - ref).abs() / ref).max()) < 1e-5
    assert (images[0] - tensors["out.images"]).abs().max() <= 1e-4


# -- configs --------------------------------------------------------------------------------------------------
def test_released_config_yaml_is_the_preset():
    config = TripoSRConfig.from_yaml(RELEASED_CONFIG_YAML)
    assert config == triposr()
    assert config.backbone.in_channels == 1024 and config.backbone.norm_num_groups == 32
    assert (config.input_size, config.transformer_layers, config.bbox_min, config.bbox_max, config.mesh_threshold) \
        == (512, 16, -0.87, 0.87, 25.0)
    assert TripoSRConfig.from_dict(json.loads(config.to_json())) == config


def test_full_size_builds_without_network(monkeypatch):
    """The released sizes build (meta device) with the built-in DINO ViT config: 419 M parameters, no download."""
    import huggingface_hub

    def refuse(*args, **kwargs):
        raise AssertionError("network access")

    for name in ("hf_hub_download", "snapshot_download"):
        monkeypatch.setattr(huggingface_hub, name, refuse)
    model = build(triposr(), meta=True)
    assert sum(p.numel() for p in model.parameters()) == 419_275_628
    assert model.vit_config["hidden_size"] == 768 and model.vit_config["patch_size"] == 16


def test_reference_defaults_are_honoured():
    """Fields the fixture does not exercise change the model as in the reference."""
    assert BackboneConfig().attention_head_dim == 88 and RendererConfig(radius=1).density_activation == "trunc_exp"
    model = _model(_other())
    assert model.backbone.norm.num_groups == 8
    assert model.backbone.transformer_blocks[0].attn1.to_q.bias is not None
    assert model.backbone.proj_in.out_features == 24 and model.backbone.proj_out.out_features == 16
    planes = torch.rand(1, 3, 6, 6, 6)
    raw = model.query_raw(planes, torch.zeros(1, 1, 3))
    assert torch.allclose(model.activate_density(raw["sigma"]), torch.nn.functional.softplus(raw["sigma"] + 0.5))
    mean_feats = planes[0, :, :, 2:4, 2:4].mean(dim=(0, 2, 3))  # the origin is the planes' centre: mean of 4 texels
    assert torch.allclose(model.decoder(mean_feats)[0], raw["sigma"][0, 0, 0], atol=1e-6)


def test_trunc_exp_clamps_the_gradient():
    from orbitmesh.models.triposr.activations import trunc_exp

    x = torch.tensor([1.0, 20.0], requires_grad=True)
    y = trunc_exp(x)
    y.sum().backward()
    assert torch.allclose(y, torch.exp(x.detach()))
    assert torch.allclose(x.grad, torch.exp(torch.tensor([1.0, 15.0])))


def test_interpolation_resolves_and_errors_name_the_key():
    data = {"a": {"b": 3, "c": "${a.b}", "d": "n=${a.c}"}, "e": "${a.c}"}
    assert resolve_interpolations(data) == {"a": {"b": 3, "c": 3, "d": "n=3"}, "e": 3}
    with pytest.raises(ModelError, match=r"x\.y refers to \$\{a\.zz\}"):
        resolve_interpolations({"a": {}, "x": {"y": "${a.zz}"}})
    with pytest.raises(ModelError, match="cycle"):
        resolve_interpolations({"a": "${b}", "b": "${a}"})
    with pytest.raises(ModelError, match="resolver"):
        resolve_interpolations({"a": "${oc.env:HOME}"})


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["backbone"].update(freeze_backbone_params=True), r"unknown TripoSR config key backbone\.freeze"),
    (lambda d: d.update(extra_section={}), r"unknown TripoSR config key extra_section"),
    (lambda d: d["tokenizer"].pop("plane_size"), r"missing TripoSR config key tokenizer\.plane_size"),
    (lambda d: d["renderer"].update(radius="big"), r"renderer\.radius must be of type float"),
    (lambda d: d.update(decoder_cls="my.Decoder"), r"unsupported TripoSR decoder_cls"),
    (lambda d: d["backbone"].update(norm_num_groups=5), r"not divisible by backbone\.norm_num_groups 5"),
    (lambda d: d["decoder"].update(in_channels=119), r"decoder\.in_channels 119"),
    (lambda d: d["renderer"].update(density_activation="nope"), r"renderer\.density_activation 'nope'"),
])
def test_bad_configs_name_the_key(edit, message):
    data = yaml.safe_load(RELEASED_CONFIG_YAML)
    edit(data)
    with pytest.raises(ModelError, match=message):
        TripoSRConfig.from_dict(resolve_interpolations(data))


def test_image_tokenizer_from_a_local_folder(tmp_path):
    vit = {"model_type": "vit", **tiny().image_tokenizer.vit_config, "transformers_version": "4.35.0"}
    (tmp_path / "dino").mkdir()
    (tmp_path / "dino" / "config.json").write_text(json.dumps(vit))
    config = tiny()
    named = replace(config, image_tokenizer=ImageTokenizerConfig(pretrained_model_name_or_path=str(tmp_path / "dino")))
    assert build(named, meta=True).vit_config["hidden_size"] == 48
    relative = replace(config, image_tokenizer=ImageTokenizerConfig(pretrained_model_name_or_path="dino"))
    assert build(relative, base_dir=tmp_path, meta=True).vit_config["patch_size"] == 8
    unknown = replace(config, image_tokenizer=ImageTokenizerConfig(pretrained_model_name_or_path="someone/vit"))
    with pytest.raises(ModelError, match="unknown image tokenizer 'someone/vit'"):
        build(unknown, meta=True)


# -- loading ---------------------------------------------------------------------------------------------------
@pytest.fixture
def no_network(monkeypatch):
    """Every huggingface_hub download entry point raises."""
    import huggingface_hub
    import huggingface_hub.file_download

    def refuse(*args, **kwargs):
        raise AssertionError("network access")

    for module in (huggingface_hub, huggingface_hub.file_download):
        for name in ("hf_hub_download", "snapshot_download"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, refuse)


@pytest.mark.parametrize("vit_keys, marker", [("v4", ".encoder.layer.0.attention.attention.query.weight"),
                                               ("v5", ".layers.0.attention.q_proj.weight")])
@pytest.mark.parametrize("make_config", [tiny, _other])
def test_released_layout_folder_loads(tmp_path, no_network, vit_keys, marker, make_config):
    """config.yaml (with ${...}) + model.ckpt under either transformers naming load and give identical outputs."""
    model = _model(make_config(), seed=2)
    folder = tmp_path / "released"
    save_released(model, folder, vit_keys=vit_keys)
    text = (folder / "config.yaml").read_text()
    assert "${tokenizer.num_channels}" in text and "vit_config" not in text
    assert folder_layout(folder) == "released"
    ckpt = torch.load(folder / "model.ckpt", weights_only=True)
    assert f"image_tokenizer.model{marker}" in ckpt
    loaded = TripoSR.from_pretrained(folder, local_files_only=True)
    # the tiny ViT is not built in: the folder holds its config.json in vit/ and config.yaml names that folder
    vit_folder = ImageTokenizerConfig(pretrained_model_name_or_path="vit")
    assert loaded.config == replace(model.config, image_tokenizer=vit_folder)
    assert loaded.vit_config == {"model_type": "vit", **model.vit_config}
    _assert_same(_outputs(model), _outputs(loaded))


def test_save_pretrained_round_trip(tmp_path, no_network):
    model = _model(_other(), seed=4)
    model.save_pretrained(tmp_path / "ours")
    assert {p.name for p in (tmp_path / "ours").iterdir()} == {"config.json", "model.safetensors"}
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["model_type"] == "orbitmesh-triposr"
    assert folder_layout(tmp_path / "ours") == "ours" and folder_layout(tmp_path) is None
    loaded = TripoSR.from_pretrained(tmp_path / "ours", local_files_only=True, dtype=torch.float32, device="cpu")
    assert loaded.config.backbone == model.config.backbone and loaded.vit_config == model.vit_config
    _assert_same(_outputs(model), _outputs(loaded))


def test_hub_id_reads_the_cache_first(tmp_path, hub_snapshot, monkeypatch):
    """stabilityai/TripoSR resolves through the hub cache without a network call; missing + local_files_only is
    an error that says so."""
    import huggingface_hub

    model = _model(seed=5)
    save_released(model, hub_snapshot(tmp_path, "stabilityai/TripoSR", "b" * 40))
    real, calls = huggingface_hub.hf_hub_download, []

    def spy(*args, **kwargs):
        calls.append(kwargs.get("local_files_only"))
        return real(*args, **kwargs)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", spy)
    loaded = from_pretrained("stabilityai/TripoSR", cache_dir=tmp_path)  # downloads allowed, but cached
    assert calls and all(calls)
    assert torch.equal(_outputs(model)["planes"], _outputs(loaded)["planes"])
    with pytest.raises(ModelError, match="not in the local cache"):
        from_pretrained("stabilityai/TripoSR", local_files_only=True, cache_dir=tmp_path / "empty")


def test_key_errors_name_the_key():
    model = _model()
    sd = model.state_dict()
    bad = {**sd, "decoder.layers.2.weight": torch.zeros(3, 3)}
    with pytest.raises(ModelError, match=r"decoder\.layers\.2\.weight: checkpoint \(3, 3\) vs model \(16, 16\)"):
        load_into(model.config, bad)
    missing = {k: v for k, v in sd.items() if k != "backbone.proj_out.bias"}
    with pytest.raises(ModelError, match=r"TripoSR architecture; missing keys: backbone\.proj_out\.bias"):
        load_into(model.config, missing)
    with pytest.raises(ModelError, match=r"unexpected keys: backbone\.extra"):
        load_into(model.config, {**sd, "backbone.extra": torch.zeros(1)})


def test_bad_sources_are_clear(tmp_path, no_network):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no TripoSR model"):
        TripoSR.from_pretrained(tmp_path / "empty")
    with pytest.raises(ModelError, match="model not found"):
        TripoSR.from_pretrained(tmp_path / "no" / "such" / "folder")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "config.yaml").write_text(RELEASED_CONFIG_YAML)
    (tmp_path / "broken" / "model.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot read the torch checkpoint"):
        TripoSR.from_pretrained(tmp_path / "broken")


# -- rendering ------------------------------------------------------------------------------------------------
def test_render_is_differentiable_in_the_planes():
    """The refinement optimises planes through this renderer: gradients reach them, and empty rays are white."""
    model = _model()
    with torch.no_grad():
        planes = model(torch.rand(1, 3, 64, 64))
    planes.requires_grad_(True)
    rays_o = torch.tensor([[[2.0, 0.0, 0.0], [2.0, 3.0, 0.0]]])
    rays_d = torch.tensor([[[-1.0, 0.0, 0.0], [1.0, 0.0, 0.0]]])  # the second misses the box
    out = model.render_rays(planes, rays_o, rays_d)
    assert out["opacity"][0, 1] == 0 and torch.equal(out["rgb"][0, 1], torch.ones(3))
    assert 0 < float(out["opacity"][0, 0].detach()) <= 1
    out["rgb"][0, 0].sum().backward()
    assert planes.grad is not None and float(planes.grad.abs().sum()) > 0


def test_input_camera_is_the_references_azimuth_zero_camera():
    """Carving and input texturing project through the model's input camera: for TripoSR the reference's
    azimuth-0 orbit camera (distance 1.9, fovy 40), not the LRM's (1.0, focal 0.75)."""
    import math

    from orbitmesh.pipeline.input_view import source_camera_params

    distance, focal = source_camera_params(tiny())
    assert distance == 1.9 and focal == pytest.approx(0.5 / math.tan(math.radians(20.0)))
