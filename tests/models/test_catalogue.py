"""The model catalogue: every model of every kind, its licence, and whether it is on this machine
(model folder, hub cache layout, bundled, built in) without touching the network; the loaders,
/health and doctor reading it; doctor without torch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orbitmesh.errors import ModelError
from orbitmesh.models import catalogue

# Text-to-image also looks in the user's hub cache: an empty folder here, not this machine's.
pytestmark = pytest.mark.usefixtures("no_user_hub_cache")


def test_every_entry_has_licence_commercial_flag_size_and_a_kind():
    entries = catalogue.models()
    assert {e.kind for e in entries} == set(catalogue.KINDS) == {"lrm", "video", "text_to_image"}
    assert {"vfusion3d", "tiny-random", "orbitmesh-preview", "sv3d_u", "sv3d_p", "stabilityai/sdxl-turbo"} <= {
        e.name for e in entries}
    for e in entries:
        assert e.licence and e.licence_url.startswith("https://"), e.name
        assert isinstance(e.commercial, bool) and e.size_gb >= 0 and e.description, e.name
        assert e.source.builtin or e.source.bundled or e.hub_id, e.name
    # one default per kind, of that kind
    for kind, name in catalogue.DEFAULTS.items():
        assert catalogue.get(name, kind).default
        assert [e.name for e in catalogue.models(kind) if e.default] == [name]
    assert not catalogue.get("vfusion3d").commercial and catalogue.get("tiny-random").commercial
    assert catalogue.get("sv3d_p").gated and catalogue.get("vfusion3d").preset == "vfusion3d"
    assert all(e.text_to_image is not None for e in catalogue.models("text_to_image"))


def test_empty_model_folder_has_only_the_built_in_and_bundled_models(tmp_path):
    available = {e.name for e in catalogue.models() if e.is_available(tmp_path / "empty")}
    assert available == {"tiny-random", "orbitmesh-preview"}


def test_lrm_in_the_model_folder_or_the_hub_cache(tmp_path, fake_hub_file):
    vf = catalogue.get("vfusion3d")
    (tmp_path / "vfusion3d").mkdir()
    (tmp_path / "vfusion3d" / "config.json").write_text("{}")
    assert not vf.is_available(tmp_path)  # a config without weights is not a model
    (tmp_path / "vfusion3d" / "model.safetensors").write_bytes(b"x")
    assert vf.is_available(tmp_path) and vf.source.local_path(tmp_path) == tmp_path / "vfusion3d"

    other = tmp_path / "other"
    cached = fake_hub_file(catalogue.hub_cache_dir(other), "facebook/vfusion3d", "model.safetensors")
    assert vf.is_available(other) and vf.cached_file(other) == cached
    (cached.parents[2] / "refs" / "main").write_text("another-revision")  # main moved on: not downloaded
    assert not vf.is_available(other)


def test_hub_cache_reading_agrees_with_huggingface_hub(tmp_path, fake_hub_file):
    hub = pytest.importorskip("huggingface_hub")
    path = fake_hub_file(tmp_path, "stabilityai/sv3d", "sv3d_u.safetensors")
    assert catalogue.hub_cached_file("stabilityai/sv3d", "sv3d_u.safetensors", tmp_path) == path
    assert Path(hub.try_to_load_from_cache("stabilityai/sv3d", "sv3d_u.safetensors", cache_dir=tmp_path)) == path
    assert catalogue.hub_cached_file("stabilityai/sv3d", "sv3d_p.safetensors", tmp_path) is None
    assert not isinstance(hub.try_to_load_from_cache("stabilityai/sv3d", "sv3d_p.safetensors", cache_dir=tmp_path),
                          str)


@pytest.mark.parametrize("layout", ["sv3d_p.safetensors", "sv3d/sv3d_p.safetensors", "sv3d_p/sv3d.json", "hub"])
def test_video_model_layouts(tmp_path, layout, fake_hub_file):
    sv3d_p, sv3d_u = catalogue.get("sv3d_p"), catalogue.get("sv3d_u")
    assert not sv3d_p.is_available(tmp_path)
    if layout == "hub":
        fake_hub_file(tmp_path / "hub", "stabilityai/sv3d", "sv3d_p.safetensors")
    else:
        (tmp_path / layout).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / layout).write_bytes(b"x")
    assert sv3d_p.is_available(tmp_path) and not sv3d_u.is_available(tmp_path)


def test_video_resolve_source_reads_the_catalogue(tmp_path, fake_hub_file):
    pytest.importorskip("torch")
    from orbitmesh.models.video.pipeline import HUB_ID, SV3D_NAMES, resolve_source

    assert HUB_ID == catalogue.get("sv3d_p").hub_id and set(SV3D_NAMES) == {"sv3d_u", "sv3d_p"}
    assert resolve_source("sv3d_p", tmp_path) == (HUB_ID, "sv3d_p")
    cached = fake_hub_file(tmp_path / "hub", HUB_ID, "sv3d_p.safetensors")
    assert resolve_source("sv3d_p", tmp_path) == (cached, "sv3d_p")
    (tmp_path / "sv3d_p.safetensors").write_bytes(b"x")  # the model folder wins over the cache
    assert resolve_source("sv3d_p", tmp_path) == (tmp_path / "sv3d_p.safetensors", "sv3d_p")


def test_text_to_image_in_the_model_folder_or_a_hub_cache(tmp_path, no_user_hub_cache, fake_hub_file):
    from orbitmesh.models.text_to_image import find_local_model

    turbo = catalogue.get("stabilityai/sdxl-turbo")
    assert not turbo.is_available(tmp_path) and find_local_model(turbo.name, tmp_path) is None
    index = fake_hub_file(no_user_hub_cache, turbo.name, "model_index.json")  # diffusers' own cache
    assert turbo.is_available(tmp_path) and find_local_model(turbo.name, tmp_path) == index.parent
    assert find_local_model(turbo.name, None) == index.parent
    folder = tmp_path / "stabilityai--sdxl-turbo"  # `hf download --local-dir` into the model folder
    folder.mkdir()
    (folder / "model_index.json").write_text("{}")
    assert find_local_model(turbo.name, tmp_path) == folder  # the model folder first
    assert find_local_model(str(folder), None) == folder  # a folder path as such
    assert find_local_model("someone/unknown-model", tmp_path) is None


def test_how_to_get_names_the_model_and_where_it_goes(tmp_path):
    for e in catalogue.models():
        fix = e.how_to_get(tmp_path)
        assert fix and "\n" not in fix, e.name
        if e.hub_id:
            assert e.hub_id in fix and e.licence.split(" (")[0] in fix, e.name
            assert str(tmp_path) in fix, e.name
    assert "hf auth login" in catalogue.get("sv3d_u").how_to_get(tmp_path)
    assert "sv3d_u.safetensors" in catalogue.get("sv3d_u").how_to_get(tmp_path)
    assert "--model vfusion3d" in catalogue.get("vfusion3d").how_to_get(tmp_path)


def test_lookup_names_the_known_models():
    assert catalogue.get("sv3d_u").kind == "video"
    with pytest.raises(ModelError, match="unknown model 'sv4d'") as err:
        catalogue.get("sv4d")
    assert "sv3d_p" in err.value.fix and "vfusion3d" in err.value.fix
    with pytest.raises(ModelError, match="not a reconstruction model") as err:
        catalogue.get("sv3d_u", "lrm")
    assert err.value.fix == "use one of vfusion3d, tiny-random, orbitmesh-preview"


def test_require_available_raises_with_the_fix(tmp_path):
    with pytest.raises(ModelError, match="not available yet") as err:
        catalogue.require_available("sv3d_p", tmp_path, needed_for="quality mode", otherwise="use mode 'fast'")
    assert "quality mode needs the SV3D" in err.value.message and str(tmp_path) in err.value.message
    assert err.value.fix == catalogue.get("sv3d_p").how_to_get(tmp_path) + "; or use mode 'fast'"
    with pytest.raises(ModelError, match="model vfusion3d is not available yet") as err:
        catalogue.require_available("vfusion3d", tmp_path)
    assert err.value.fix == catalogue.get("vfusion3d").how_to_get(tmp_path)
    (tmp_path / "sv3d_p.safetensors").write_bytes(b"x")
    assert catalogue.require_available("sv3d_p", tmp_path).name == "sv3d_p"
    assert catalogue.require_available("tiny-random", tmp_path).name == "tiny-random"


def test_registry_resolves_with_the_catalogue(tmp_path, fake_hub_file):
    from orbitmesh.models import registry

    assert registry.resolve_lrm_source(None, tmp_path).name == "orbitmesh-preview"
    fake_hub_file(tmp_path / "hub", "facebook/vfusion3d", "model.safetensors")
    source = registry.resolve_lrm_source(None, tmp_path)
    assert (source.name, source.kind, source.location) == ("vfusion3d", "hub", "facebook/vfusion3d")
    assert source.info is catalogue.get("vfusion3d")
    assert registry.preview_model_dir() == catalogue.get("orbitmesh-preview").source.bundled_path()
    assert not hasattr(registry, "resolve_lrm")


def test_health_rows_come_from_the_catalogue(tmp_path, cpu_settings):
    from orbitmesh.server.health import health_info, models_summary, modes

    settings = cpu_settings(tmp_path)
    rows, best = models_summary(settings)
    assert [r["name"] for r in rows] == [e.name for e in catalogue.models()] and best == "orbitmesh-preview"
    for row in rows:
        entry = catalogue.get(row["name"])
        assert {"name", "kind", "available", "licence", "hub_id", "gated", "description", "commercial",
                "size_gb"} <= set(row)
        assert (row["kind"], row["licence"], row["commercial"], row["available"]) == (
            entry.kind, entry.licence, entry.commercial, entry.is_available(settings.model_dir))
        assert ("default" in row) == (entry.kind == "text_to_image")
    assert [r["name"] for r in rows if r.get("default")] == [catalogue.DEFAULTS["text_to_image"]]
    assert modes(rows) == ["fast"]
    settings.model_dir.mkdir()
    (settings.model_dir / "sv3d_u.safetensors").write_bytes(b"x")
    info = health_info(settings, None)
    assert info["modes"] == ["fast", "quality"] and info["default_model"] == "orbitmesh-preview"
    assert json.loads(json.dumps(info))["device"]["device"]  # JSON-ready, the probe answered


# Nothing torch-based importable, as where only the runtime's light dependencies are installed.
NO_TORCH = ("torch", "diffusers", "transformers")


def test_health_without_torch_and_without_the_cli(tmp_path, run_python):
    proc = run_python("import json, sys; from orbitmesh.settings import Settings; "
                      "from orbitmesh.server.health import health_info; "
                      f"info = health_info(Settings(model_dir={str(tmp_path)!r}), None); "
                      "cli = sorted(m for m in sys.modules if m.startswith('orbitmesh.cli')); "
                      "print(json.dumps({'info': info, 'cli': cli}))", without=NO_TORCH)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["cli"] == [] and out["info"]["device"] == {"device": "unavailable (torch missing)"}
    assert len(out["info"]["models"]) == len(catalogue.models()) and out["info"]["modes"] == ["fast"]


def test_doctor_without_torch_says_what_to_install(tmp_path, run_python):
    proc = run_python("import sys; from orbitmesh.cli import main; "
                      f"sys.exit(main(['doctor', '--model-dir', {str(tmp_path)!r}]))", without=NO_TORCH)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "device:   device=unavailable (torch missing)" in lines
    assert any(line.split() == ["torch", "MISSING"] for line in lines)
    fix = next(line for line in lines if line.strip().startswith("torch (for all models):"))
    assert 'pip install "torch' in fix
    for entry in catalogue.models():  # the catalogue table: name, kind, available, commercial, licence
        row = next(line for line in lines if line.split()[:2] == [entry.name, entry.kind])
        assert entry.licence in row
    assert any(line.startswith("  SV3D orbit-view model sv3d_p (for quality mode): ") for line in lines)
