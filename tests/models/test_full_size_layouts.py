"""The released file layouts the full-size end-to-end benchmark writes (orbitmesh.bench.full_size), at tiny sizes:
each layout holds exactly the reference key set and loads back through our loaders; the SGM checkpoint converts
streaming (tensor by tensor) and the full-size layout passes the converter's checks without any weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from orbitmesh.bench import full_size as F
from orbitmesh.models.triposr.config import RELEASED_CONFIG_YAML
from orbitmesh.models.video import convert as C
from orbitmesh.models.video.tiny import SV3D_P_SGM_CONFIG, TINY_SGM_CONFIG

TINY_CLIP = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 1,
             "image_size": 28, "patch_size": 14, "projection_dim": 32, "hidden_act": "gelu", "layer_norm_eps": 1e-5}
TINY_TEXT = {"positional_embedding": (7, 32), "text_projection": (32, 32), "token_embedding.weight": (50, 32),
             "ln_final.weight": (32,), "ln_final.bias": (32,), "logit_scale": ()}


def _fixture_weights(path: Path) -> dict[str, tuple[int, ...]]:
    with safe_open(str(path), "pt") as f:
        return {k[len("model."):]: tuple(f.get_slice(k).get_shape()) for k in f.keys() if k.startswith("model.")}


def test_fill_is_seeded_and_fits_each_role():
    a = F.random_tensor("transformer.layers.0.mlp.0.weight", (64, 32))
    assert torch.equal(a, F.random_tensor("transformer.layers.0.mlp.0.weight", (64, 32)))
    assert not torch.equal(a, F.random_tensor("transformer.layers.1.mlp.0.weight", (64, 32)))
    assert float(a.abs().max()) <= 32 ** -0.5 and float(a.std()) > 0.05
    assert torch.equal(F.random_tensor("norm1.weight", (8,)), torch.ones(8))
    assert torch.equal(F.random_tensor("norm1.bias", (8,)), torch.zeros(8))
    assert torch.equal(F.random_tensor("time_mixer.mix_factor", (1,)), torch.zeros(1))
    assert abs(float(F.random_tensor("transformer.pos_embed", (1, 300, 64)).std()) - 0.02) < 0.002


def test_vfusion3d_layouts_hold_the_reference_keys_and_load(fixtures_dir, tmp_path):
    from orbitmesh.models.lrm import LRM
    from orbitmesh.models.lrm.parity import load_fixture, model_from_fixture

    path = fixtures_dir / "lrm_reference_tiny.safetensors"
    config = model_from_fixture(*load_fixture(path)).config
    model = F.random_lrm(config)
    reference = F.vfusion3d_reference_state_dict(model)
    assert {k: tuple(v.shape) for k, v in reference.items()} == _fixture_weights(path)
    github = F.write_vfusion3d_github(model, tmp_path / "gh" / F.GITHUB_FILE)
    assert set(torch.load(github, weights_only=True)) == {"model_state_dict"}
    meta = json.loads(safe_open(str(path), "pt").metadata()["generator_config"])
    hub = F.write_vfusion3d_hub(model, tmp_path / "vfusion3d", config={**meta, "model_type": "lrm_generator"})
    with safe_open(str(hub / "model.safetensors"), "pt") as f:
        assert set(f.keys()) == set(reference)
    image = torch.rand(1, 3, config.input_size, config.input_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = model(image)
        for source in (github, hub):
            loaded = LRM.from_pretrained(source, config=config)
            assert torch.equal(loaded(image), expected), source


def test_full_size_vfusion3d_hub_config_sizes_are_ignored(tmp_path):
    """The hub port's config.json names other sizes than its weights: the loader reads the sizes off the tensors."""
    from orbitmesh.models.lrm import vfusion3d
    from orbitmesh.models.lrm.loading import _reference_base, build, infer_config, to_model_keys

    reference = F.vfusion3d_reference_state_dict(build(vfusion3d(), meta=True))
    base = _reference_base(F.VFUSION3D_HUB_CONFIG)
    config = infer_config(to_model_keys(reference, set(build(vfusion3d(), meta=True).state_dict())), base)
    assert config.to_dict() == {**vfusion3d().to_dict(), "samples_per_ray": 64}


def test_triposr_released_layout_holds_the_reference_keys_and_loads(fixtures_dir, tmp_path):
    from orbitmesh.models.triposr import TripoSR, TripoSRConfig, preset

    path = fixtures_dir / "triposr_reference_tiny.safetensors"
    model = F.random_triposr(preset("tiny"))  # the fixture's sizes
    folder = F.write_triposr_released(model, tmp_path / "triposr")
    ckpt = torch.load(folder / "model.ckpt", weights_only=True)
    assert {k: tuple(v.shape) for k, v in ckpt.items()} == _fixture_weights(path)
    loaded = TripoSR.from_pretrained(folder)
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(image), model(image))
    assert TripoSRConfig.from_yaml(RELEASED_CONFIG_YAML) == preset("triposr")


def test_sv3d_sgm_unet_keys_are_the_reference_keys(fixtures_dir):
    path = fixtures_dir / "sv3d_unet_reference_tiny.safetensors"
    with safe_open(str(path), "pt") as f:
        sgm = json.loads(f.metadata()["unet_config"])
        want = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys() if k.startswith(C.UNET_PREFIX)}
    plan = F.sv3d_sgm_plan(sgm, vae_blocks=(32, 32, 32, 32), vae_layers=1, clip=TINY_CLIP, clip_text=TINY_TEXT)
    assert {e.name: e.shape for e in plan if e.name.startswith(C.UNET_PREFIX)} == want


class _Shapes(dict):
    """A checkpoint of meta tensors: names and shapes only, no memory."""

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self[key].shape)


def test_full_size_sgm_layout_passes_the_converter_without_weights():
    """The full-size sv3d_p layout: the UNet config read off its shapes is the released one, and the UNet and
    CLIP plans of the streaming converter accept it (names and shapes), all on the meta device."""
    plan = F.sv3d_sgm_plan()
    ckpt = _Shapes({e.name: torch.empty(e.shape, device="meta") for e in plan})
    size = sum(e.nbytes for e in plan)
    assert 9.0e9 < size < 10.0e9  # the released sv3d_p.safetensors is about 9.4 GB of float32
    assert C.check_kind(ckpt, "sv3d_p.safetensors", "sv3d_p") == "sv3d_p"
    unet = C.PrefixView(ckpt, C.UNET_PREFIX)
    derived = C.sgm_unet_config_from_state_dict(unet)
    derived["attention_resolutions"] = sorted(derived["attention_resolutions"], reverse=True)  # a set of levels
    assert {k: derived[k] for k in SV3D_P_SGM_CONFIG} == SV3D_P_SGM_CONFIG
    assert derived["transformer_depth_middle"] == 1
    C._unet_plan(unet, derived)  # raises a ModelError naming any key or shape that does not fit
    C._clip_plan(ckpt)
    assert any(".time_stack." in e.name and e.name.startswith("first_stage_model.decoder.") for e in plan)
    assert "conditioner.embedders.1.encoder.post_quant_conv.weight" in ckpt
    assert not any(e.name.startswith("first_stage_model.encoder.") for e in plan)  # an Identity encoder in SGM


def test_tiny_sgm_file_converts_streaming_and_loads(tmp_path, monkeypatch):
    from orbitmesh.models.video.pipeline import SV3DPipeline

    plan = F.sv3d_sgm_plan(TINY_SGM_CONFIG, vae_blocks=(32, 32, 32, 32), vae_layers=1, clip=TINY_CLIP,
                           clip_text=TINY_TEXT)
    path = tmp_path / "sv3d_p.safetensors"
    assert F.write_sv3d_sgm(path, plan) == path.stat().st_size

    def whole_file(*args, **kwargs):
        raise AssertionError("convert-sv3d must not read the whole checkpoint into memory")

    monkeypatch.setattr(C, "read_checkpoint", whole_file)
    monkeypatch.setattr("safetensors.torch.load_file", whole_file)
    info = C.convert_checkpoint(path, tmp_path / "sv3d_p", expected="sv3d_p", num_head_channels=16)
    assert info["variant"] == "sv3d_p" and info["sgm_unet_config"]["model_channels"] == 32
    monkeypatch.undo()
    # the converted folder loads with one copy of the weights: never diffusers' random init + a second copy
    from diffusers import ModelMixin

    monkeypatch.setattr(ModelMixin, "from_pretrained", classmethod(whole_file))
    pipe = SV3DPipeline.from_pretrained(tmp_path / "sv3d_p")
    want = {e.name: e.make() for e in plan}
    assert torch.equal(pipe.unet.conv_in.weight, want["model.diffusion_model.input_blocks.0.0.weight"])
    assert torch.equal(pipe.unet.down_blocks[0].resnets[0].spatial_res_block.conv1.weight,
                       want["model.diffusion_model.input_blocks.1.0.in_layers.2.weight"])
    visual = "conditioner.embedders.0.open_clip.model.visual."
    q, k, v = want[visual + "transformer.resblocks.1.attn.in_proj_weight"].chunk(3)
    attn = pipe.image_encoder.vision_model.encoder.layers[1].self_attn
    assert torch.equal(attn.q_proj.weight, q) and torch.equal(attn.v_proj.weight, v)
    assert torch.equal(pipe.image_encoder.visual_projection.weight,
                       want[visual + "proj"].T)
    assert torch.equal(pipe.vae.encoder.conv_in.weight, want["conditioner.embedders.1.encoder.encoder.conv_in.weight"])
    assert torch.equal(pipe.vae.decoder.conv_in.weight, want["first_stage_model.decoder.conv_in.weight"])
    assert pipe.vae.config.use_post_quant_conv is False  # SGM's AutoencodingEngine decodes without one
    with torch.no_grad():
        z = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(pipe.decode(z)).all()


def test_streaming_writer_matches_safetensors(tmp_path):
    from safetensors.torch import load_file

    from orbitmesh.models.streaming import Entry, LazyCheckpoint, write_safetensors

    tensors = {"a": torch.randn(3, 5), "b": torch.arange(7), "c": torch.randn(4, dtype=torch.bfloat16),
               "d": torch.zeros(0, 2), "e": torch.tensor(2.5)}
    path = tmp_path / "x.safetensors"
    write_safetensors(path, [Entry(k, v.dtype, tuple(v.shape), lambda v=v: v) for k, v in tensors.items()],
                      {"format": "pt"})
    back = load_file(str(path))
    assert set(back) == set(tensors) and all(torch.equal(back[k], tensors[k]) for k in tensors)
    with LazyCheckpoint(path) as lazy:
        assert lazy.shape("a") == (3, 5) and lazy.metadata == {"format": "pt"} and "b" in lazy
        assert torch.equal(lazy["c"], tensors["c"])
    with pytest.raises(ValueError, match="planned"):
        write_safetensors(tmp_path / "y.safetensors", [Entry("a", torch.float32, (2,), lambda: torch.zeros(3))])
    assert not (tmp_path / "y.safetensors").exists()


@pytest.mark.parametrize("kind", ["vfusion3d", "vfusion3d-hub", "triposr"])
def test_loading_a_checkpoint_holds_one_copy_of_the_weights(kind, tmp_path, monkeypatch):
    """The tensors read from the file are released once the model has its own copies: when the model is
    finished (``.float()``), none of them is still alive (a full-size LRM peaked at two copies, 3.75 GB)."""
    import weakref

    if kind.startswith("vfusion3d"):
        from orbitmesh.models.lrm import LRM, tiny
        from orbitmesh.models.lrm import loading as module

        model = F.random_lrm(tiny())
        source = (F.write_vfusion3d_github(model, tmp_path / F.GITHUB_FILE) if kind == "vfusion3d" else
                  F.write_vfusion3d_hub(model, tmp_path / "vfusion3d"))
        reader, load = "read_state_dict", lambda: LRM.from_pretrained(source, config=model.config)
    else:
        from orbitmesh.models.triposr import TripoSR, preset
        from orbitmesh.models.triposr import loading as module

        model = F.random_triposr(preset("tiny"))
        source = F.write_triposr_released(model, tmp_path / "triposr")
        reader, load = "read_weights", lambda: TripoSR.from_pretrained(source)
    read = getattr(module, reader)
    loaded_refs: list = []

    def tracking_read(*args, **kwargs):
        out = read(*args, **kwargs)
        sd = out[0] if isinstance(out, tuple) else out
        loaded_refs.extend(weakref.ref(t) for t in sd.values())
        return out

    alive_when_done: list[int] = []
    to_float = torch.nn.Module.float

    def tracking_float(self):
        if not alive_when_done:
            alive_when_done.append(sum(r() is not None for r in loaded_refs))
        return to_float(self)

    monkeypatch.setattr(module, reader, tracking_read)
    monkeypatch.setattr(torch.nn.Module, "float", tracking_float)
    loaded = load()
    assert loaded_refs and alive_when_done == [0]
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), model.state_dict().values()))
