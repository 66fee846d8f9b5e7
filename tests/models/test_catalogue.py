"""The model catalogue: every model of every kind, its licence, and whether it is on this machine
(model folder, hub cache layout, bundled, built in) without touching the network; the loaders,
/health and doctor reading it; doctor without torch."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from orbitmesh.errors import LicenceError, ModelError
from orbitmesh.models import catalogue

# Text-to-image also looks in the user's hub cache: an empty folder here, not this machine's.
pytestmark = pytest.mark.usefixtures("no_user_hub_cache")


def test_every_entry_has_licence_commercial_flag_size_and_a_kind():
    entries = catalogue.models()
    assert {e.kind for e in entries} == set(catalogue.KINDS) == {"lrm", "video", "text_to_image",
                                                                 "background_removal"}
    assert {"vfusion3d", "triposr", "tiny-random", "orbitmesh-preview", "sv3d_u", "sv3d_p",
            "stabilityai/sdxl-turbo"} <= {e.name for e in entries}
    for e in entries:
        assert e.licence and e.licence_url.startswith("https://"), e.name
        assert e.commercial in ("yes", "conditional", "no") and e.size_gb >= 0 and e.description, e.name
        assert bool(e.condition) == (e.commercial == "conditional"), e.name
        assert e.source.builtin or e.source.bundled or e.hub_id or e.source.url, e.name
        assert (e.architecture in ("vfusion3d", "triposr")) == (e.kind == "lrm"), e.name
    # one default per kind, of that kind
    for kind, name in catalogue.DEFAULTS.items():
        assert catalogue.get(name, kind).default
        assert [e.name for e in catalogue.models(kind) if e.default] == [name]
    assert catalogue.get("sv3d_p").gated and catalogue.get("vfusion3d").preset == "vfusion3d"
    assert all(e.text_to_image is not None for e in catalogue.models("text_to_image"))
    assert set(catalogue.LRM_PREFERENCE) <= {e.name for e in catalogue.models("lrm")}


def test_the_three_commercial_values():
    by_value = {v: {e.name for e in catalogue.models() if e.commercial == v} for v in catalogue.COMMERCIAL}
    assert {"triposr", "orbitmesh-preview", "tiny-random", "black-forest-labs/FLUX.1-schnell"} <= by_value["yes"]
    assert by_value["no"] == {"vfusion3d"}  # CC-BY-NC
    # Stability AI Community Licence: free below a revenue threshold, stated on the entry.
    assert by_value["conditional"] == {"sv3d_u", "sv3d_p", "stabilityai/sdxl-turbo", "stabilityai/sd-turbo"}
    for name in by_value["conditional"]:
        entry = catalogue.get(name)
        assert entry.licence == "Stability AI Community License" and "USD 1M" in entry.condition, name
    triposr = catalogue.get("triposr")
    assert (triposr.kind, triposr.hub_id, triposr.licence, triposr.architecture) == (
        "lrm", "stabilityai/TripoSR", "MIT", "triposr")
    assert set(triposr.files) == {"config.yaml", "model.ckpt"} and triposr.size_gb == pytest.approx(1.68)
    assert triposr.licence_record() == {"name": "triposr", "licence": "MIT", "commercial": "yes", "condition": None}
    with pytest.raises(ValueError, match="commercial must be one of"):  # the old bool is refused, not coerced
        catalogue.ModelEntry("x", "video", "d", catalogue.Source(builtin=True), "L", "https://l", True, 0.0)
    with pytest.raises(ValueError, match="condition"):
        catalogue.ModelEntry("x", "video", "d", catalogue.Source(builtin=True), "L", "https://l", "conditional", 0.0)


def test_commercial_use_check_per_kind():
    assert catalogue.check_commercial_use("lrm", "triposr", catalogue.get("triposr")) is None
    warning = catalogue.check_commercial_use("video", "sv3d_p", catalogue.get("sv3d_p"))
    assert "sv3d_p" in warning and catalogue.SAI_CONDITION in warning
    with pytest.raises(LicenceError, match="vfusion3d is licensed CC-BY-NC") as err:
        catalogue.check_commercial_use("lrm", "vfusion3d", catalogue.get("vfusion3d"))
    assert "--model triposr (MIT)" in err.value.fix and "vfusion3d" not in err.value.fix
    assert isinstance(err.value, ModelError)  # every ModelError handler sees it
    with pytest.raises(LicenceError, match="licence is unknown") as err:  # a model we know nothing of
        catalogue.check_commercial_use("text_to_image", "someone/model", None)
    assert "--text-to-image-model black-forest-labs/FLUX.1-schnell" in err.value.fix


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
    assert err.value.fix == "use one of vfusion3d, triposr, tiny-random, orbitmesh-preview"


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
    assert source.info is catalogue.get("vfusion3d") and source.architecture == "vfusion3d"
    assert registry.preview_model_dir() == catalogue.get("orbitmesh-preview").source.bundled_path()
    assert not hasattr(registry, "resolve_lrm")


def _fake_triposr(folder: Path, layout: str = "released") -> Path:
    folder.mkdir(parents=True)
    names = ("config.yaml", "model.ckpt") if layout == "released" else ("config.json", "model.safetensors")
    for name in names:
        (folder / name).write_bytes(b"x")
    return folder


@pytest.mark.parametrize("layout", ["released", "save_pretrained", "hub"])
def test_triposr_is_found_in_each_layout(tmp_path, layout, fake_hub_file):
    from orbitmesh.models import registry

    triposr = catalogue.get("triposr")
    (tmp_path / "triposr").mkdir()
    (tmp_path / "triposr" / "config.yaml").write_text("x")
    assert not triposr.is_available(tmp_path)  # a config without weights is not a model
    (tmp_path / "triposr" / "config.yaml").unlink()
    (tmp_path / "triposr").rmdir()
    if layout == "hub":
        fake_hub_file(tmp_path / "hub", "stabilityai/TripoSR", "model.ckpt")
    else:
        _fake_triposr(tmp_path / "triposr", layout)
    assert triposr.is_available(tmp_path)
    source = registry.resolve_lrm_source("triposr", tmp_path)
    where = ("hub", "stabilityai/TripoSR") if layout == "hub" else ("path", str(tmp_path / "triposr"))
    assert (source.name, source.kind, source.location, source.architecture) == ("triposr", *where, "triposr")
    assert registry.resolve_lrm_source("stabilityai/TripoSR", tmp_path).name == "triposr"
    assert registry.resolve_lrm_source(None, tmp_path).name == "triposr"  # the only real model installed
    if layout != "hub":  # its folder passed as a path keeps the catalogue's name and licence
        by_path = registry.resolve_lrm_source(str(tmp_path / "triposr"), tmp_path, commercial_only=True)
        assert (by_path.name, by_path.info) == ("triposr", triposr)
    elsewhere = _fake_triposr(tmp_path / "elsewhere" / "my-triposr")  # released layout: TripoSR's class
    assert registry.resolve_lrm_source(str(elsewhere), tmp_path).architecture == "triposr"


def test_default_model_preference_commercial_only_and_setting(tmp_path):
    from orbitmesh.models import registry

    _fake_triposr(tmp_path / "triposr")
    (tmp_path / "vfusion3d").mkdir()
    (tmp_path / "vfusion3d" / "model.safetensors").write_bytes(b"x")
    assert catalogue.LRM_PREFERENCE == ("vfusion3d", "triposr")  # the documented order
    assert registry.resolve_lrm_source(None, tmp_path).name == "vfusion3d"
    assert registry.resolve_lrm_source(None, tmp_path, commercial_only=True).name == "triposr"  # "no" skipped
    assert registry.resolve_lrm_source(None, tmp_path, default="triposr").name == "triposr"  # configured
    assert registry.resolve_lrm_source("tiny-random", tmp_path, default="triposr").name == "tiny-random"
    with pytest.raises(LicenceError, match="vfusion3d") as err:  # a configured default is checked like --model
        registry.resolve_lrm_source(None, tmp_path, commercial_only=True, default="vfusion3d")
    assert "--model triposr" in err.value.fix
    # Only VFusion3D installed: an error naming TripoSR, not a silent fall-back to the toy preview model.
    only_vf = tmp_path / "only-vfusion3d"
    (only_vf / "vfusion3d").mkdir(parents=True)
    (only_vf / "vfusion3d" / "model.safetensors").write_bytes(b"x")
    with pytest.raises(LicenceError, match="do not allow commercial use: vfusion3d") as err:
        registry.resolve_lrm_source(None, only_vf, commercial_only=True)
    assert "--model triposr" in err.value.fix and "--model orbitmesh-preview" in err.value.fix
    # Nothing installed: the bundled preview model (Apache-2.0), whose notice names TripoSR when commercial.
    fresh = registry.resolve_lrm_source(None, tmp_path / "empty", commercial_only=True)
    assert fresh.name == "orbitmesh-preview" and "--model triposr" in fresh.notice
    assert "--model vfusion3d" in registry.resolve_lrm_source(None, tmp_path / "empty").notice
    with pytest.raises(LicenceError, match="not in the model catalogue"):  # a model we know nothing of
        registry.resolve_lrm_source("someone/some-lrm", tmp_path, commercial_only=True)


def test_health_rows_come_from_the_catalogue(tmp_path, cpu_settings):
    from orbitmesh.server.health import health_info, models_summary, modes

    settings = cpu_settings(tmp_path)
    rows, best = models_summary(settings)
    assert [r["name"] for r in rows] == [e.name for e in catalogue.models()] and best == "orbitmesh-preview"
    for row in rows:
        entry = catalogue.get(row["name"])
        assert {"name", "kind", "available", "licence", "hub_id", "gated", "description", "commercial",
                "condition", "size_gb"} <= set(row)
        assert (row["kind"], row["licence"], row["commercial"], row["condition"], row["available"]) == (
            entry.kind, entry.licence, entry.commercial, entry.condition, entry.is_available(settings.model_dir))
        assert ("default" in row) == (entry.kind == "text_to_image")
    assert [r["name"] for r in rows if r.get("default")] == [catalogue.DEFAULTS["text_to_image"]]
    assert modes(rows) == ["fast"]
    settings.model_dir.mkdir()
    (settings.model_dir / "sv3d_u.safetensors").write_bytes(b"x")
    info = health_info(settings, None)
    assert info["modes"] == ["fast", "quality"] and info["default_model"] == "orbitmesh-preview"
    assert json.loads(json.dumps(info))["device"]["device"]  # JSON-ready, the probe answered
    by_name = {r["name"]: r for r in info["models"]}
    assert (by_name["vfusion3d"]["commercial"], by_name["triposr"]["commercial"]) == ("no", "yes")
    assert by_name["sv3d_p"]["commercial"] == "conditional" and "USD 1M" in by_name["sv3d_p"]["condition"]
    assert info["commercial_only"] is False
    # A commercial-only server with VFusion3D and TripoSR installed: TripoSR is what a job gets.
    (settings.model_dir / "vfusion3d").mkdir()
    (settings.model_dir / "vfusion3d" / "model.safetensors").write_bytes(b"x")
    _fake_triposr(settings.model_dir / "triposr")
    assert health_info(settings, None)["default_model"] == "vfusion3d"
    strict = health_info(replace(settings, commercial_only=True), None)
    assert strict["default_model"] == "triposr" and strict["commercial_only"] is True


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
        assert row.split()[3] == entry.commercial and entry.licence in row and "refused" not in row
    assert any(line.startswith("  SV3D orbit-view model sv3d_p (for quality mode): ") for line in lines)
    assert f"  conditional (sv3d_u, sv3d_p, stabilityai/sdxl-turbo, stabilityai/sd-turbo): {catalogue.SAI_CONDITION}" \
        in lines
    assert "reconstruction default: orbitmesh-preview (Apache-2.0 (part of OrbitMesh); commercial use: yes)" in lines


def test_doctor_commercial_only_marks_refused_models_and_names_triposr(tmp_path, capsys):
    from orbitmesh.cli import main

    (tmp_path / "vfusion3d").mkdir()
    (tmp_path / "vfusion3d" / "model.safetensors").write_bytes(b"x")
    assert main(["doctor", "--model-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "reconstruction default: vfusion3d (CC-BY-NC 4.0 (non-commercial use only); commercial use: no)" in lines
    assert main(["doctor", "--model-dir", str(tmp_path), "--commercial-only"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any("commercial_only=True" in line for line in lines if line.startswith("settings:"))
    row = next(line for line in lines if line.split()[:2] == ["vfusion3d", "lrm"])
    assert row.endswith("[refused: commercial_only]")
    assert not next(line for line in lines if line.split()[:2] == ["triposr", "lrm"]).endswith("]")
    assert any(line.startswith("reconstruction default: none (commercial use only") for line in lines)
    fix = next(line for line in lines if line.startswith("  reconstruction model (for real objects"))
    assert "--model triposr" in fix
