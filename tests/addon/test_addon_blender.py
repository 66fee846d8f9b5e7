"""The Blender add-on in headless Blender (bpy 5.0.1), end to end.

Two Blender sessions run as subprocesses of their own (bpy must be imported before
pymeshlab, which this pytest process may have loaded): tests/addon/blender_helpers.py installs the
zip that build.py made with ``bpy.ops.extensions.package_install_files``, enables it and
runs the scenarios against the real ``orbitmesh serve`` / ``orbitmesh generate`` with the
``tiny-random`` model; the tests below assert on what each scenario measured.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from blender_addon.core import settings as addon_settings  # bpy-free
from blender_addon.core.manifest import ADDON_VERSION

HELPER = Path(__file__).with_name("blender_helpers.py")  # run as a script, in a process of its own

pytestmark = [pytest.mark.blender, pytest.mark.slow]
if importlib.util.find_spec("bpy") is None:
    pytestmark.append(pytest.mark.skip(reason="bpy is not installed (pip install bpy==5.0.1)"))

CURSOR = [1.0, 2.0, 3.0]


@pytest.fixture(scope="module")
def packages(tmp_path_factory, build) -> dict[str, Path]:
    dist = tmp_path_factory.mktemp("dist")
    wheel = build.build_orbitmesh_wheel(tmp_path_factory.mktemp("wheels"))
    client = build.build_client(dist)
    full = build.build_full(dist, build.host_platform(), skip_deps=True, orbitmesh_wheel=wheel)
    return {"client": client.path, "full": full.path}


def run_session(kind: str, zip_path: Path, photo: str, tmp: Path) -> dict:
    out = tmp / f"{kind}.json"
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(tmp / "blender-user"), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(HELPER), kind, str(zip_path), photo, str(out)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert out.is_file(), f"the Blender session wrote nothing (exit {proc.returncode}):\n{proc.stderr[-4000:]}"
    data = json.loads(out.read_text())
    assert "fatal" not in data, data["fatal"] + "\n--- stderr ---\n" + proc.stderr[-4000:]
    return data


@pytest.fixture(scope="module")
def server_run(packages, sample_photo, tmp_path_factory) -> dict:
    return run_session("server", packages["client"], sample_photo, tmp_path_factory.mktemp("server-session"))


@pytest.fixture(scope="module")
def inprocess_run(packages, sample_photo, tmp_path_factory) -> dict:
    return run_session("inprocess", packages["full"], sample_photo, tmp_path_factory.mktemp("inprocess-session"))


def check_imported(obj: dict, *, size: float, seed: int, backend: str) -> None:
    """The import contract: one textured mesh at the cursor, bottom-centre origin, scaled, with metadata."""
    assert obj["type"] == "MESH"
    assert obj["location"] == pytest.approx(CURSOR)
    assert obj["scale"] == pytest.approx([1.0, 1.0, 1.0])
    assert max(obj["dimensions"]) == pytest.approx(size, rel=1e-4)
    assert obj["local_min_z"] == pytest.approx(0.0, abs=1e-5)  # origin at the bottom ...
    assert obj["local_centre_xy"] == pytest.approx([0.0, 0.0], abs=1e-5)  # ... centre
    assert obj["faces"] > 100
    assert obj["uv_layers"] >= 1
    assert obj["texture_size"] == [256, 256] and obj["texture_has_pixels"]  # image-textured base colour
    assert obj["material"] == obj["name"]
    assert obj["selected"] and obj["active"] and obj["selected_count"] == 1
    props = obj["props"]
    assert props["orbitmesh_seed"] == seed
    assert props["orbitmesh_model"] == "tiny-random"
    # The licences of the models the job used, as the backend recorded them (job.json's "licences").
    assert props["orbitmesh_licence"] == "tiny-random: Apache-2.0 (part of OrbitMesh)"
    assert props["orbitmesh_commercial"] == "yes"
    assert json.loads(props["orbitmesh_licences"])["lrm"]["name"] == "tiny-random"
    assert props["orbitmesh_version"] == "0.1.0"
    assert props["orbitmesh_addon_version"] == ADDON_VERSION  # the manifest's (test_addon_units checks)
    assert props["orbitmesh_backend"] == backend
    assert props["orbitmesh_size"] == pytest.approx(size)
    assert Path(props["orbitmesh_job_dir"]).is_dir()
    settings = json.loads(props["orbitmesh_settings"])
    assert settings == {**addon_settings.defaults(), "mode": "fast", "model": "tiny-random", "seed": seed,
                        "mc_resolution": 64, "target_faces": 1000, "texture_size": 256}
    assert list(settings) == list(addon_settings.NAMES)  # every contract setting, in contract order


def calls_of(calls: list, name: str) -> list[dict]:
    return [kw for n, kw in calls if n == name]


# ----- server backend (client zip) --------------------------------------------------------------


def test_client_zip_installs_and_server_starts(server_run):
    assert server_run["install"] == {"result": ["FINISHED"], "error": None, "enabled": True}
    start = server_run["start_server"]
    assert start["result"] == ["FINISHED"] and start["status_ok"], start
    assert start["status_line"].startswith("Server 0.1.0 | ") and "tiny-random" in start["status_line"]
    assert "fast" in start["modes"].split(",")


def test_generate_through_server_imports_object(server_run):
    gen = server_run["generate"]
    assert gen["result"] == ["FINISHED"], gen["error"]
    assert gen["new_objects"] == ["a_product_photo_of_a_toy_tank"]  # named after the input
    check_imported(gen["object"], size=2.0, seed=7, backend="server")
    assert gen["object"]["props"]["orbitmesh_remote_id"] == gen["record"]["remote_id"]
    assert gen["server_job"]["status"] == "done"
    assert gen["record"]["status"] == "done" and Path(gen["record"]["glb_path"]).is_file()


def test_undo_removes_the_generated_object_in_one_step(server_run):
    gen = server_run["generate"]
    assert gen["after"]["meshes"] == gen["before"]["meshes"] + 1
    assert gen["after_undo"] == gen["before"]  # object, mesh, material and texture all gone


def test_generate_from_image_datablock(server_run):
    gen = server_run["datablock"]
    assert gen["result"] == ["FINISHED"], gen["error"]
    assert gen["input_png"] == ["input.png"]  # the unsaved image was written out for the backend
    assert gen["new_objects"] == ["painted disc"]
    assert max(gen["object"]["dimensions"]) == pytest.approx(0.5, rel=1e-4)
    assert gen["after_undo"] == gen["before"]


def test_cancel_mid_job_through_server(server_run):
    c = server_run["cancel"]
    assert c["cancelled_at_stage"] in ("preprocess", "lrm", "grid_query") and 0 <= c["cancelled_at_progress"] < 1
    assert c["result"] == ["CANCELLED"] and c["error"] is None
    assert c["after"] == c["before"] and c["cursor_unchanged"]  # Blender state intact, nothing added
    assert c["record_status"] == "cancelled" and c["server_status"] == "cancelled"
    assert c["glb_files"] == [] and c["active_jobs"] == 0 and not c["state_running"]


def test_errors_are_reports_with_a_fix(server_run):
    bad = server_run["bad_image"]
    assert bad["result"] is None and "not an image" in bad["error"] and "(fix: " in bad["error"]
    assert bad["panel_error"] and bad["panel_fix"] and bad["unchanged"]
    missing = server_run["missing_image"]
    assert "image not found" in missing["error"] and "nope.png" in missing["panel_error"]
    quality = server_run["quality_unavailable"]
    assert "does not offer quality mode" in quality["error"]
    for res in (bad, missing, quality):
        assert "Traceback" not in res["error"]


def test_mode_greyed_out_when_backend_lacks_it(server_run):
    calls = server_run["quality_unavailable"]["draw"]
    i = next(i for i, (n, kw) in enumerate(calls) if n == "prop_enum" and kw["value"] == "quality")
    j = next(i for i, (n, kw) in enumerate(calls) if n == "prop_enum" and kw["value"] == "fast")
    assert calls[i - 1] == ["set", {"enabled": False}]
    assert calls[j - 1] == ["set", {"enabled": True}]
    labels = [kw.get("text") for kw in calls_of(calls, "label")]
    assert "the backend does not offer quality mode" in labels  # the error shows in the panel


def test_reimport_and_regenerate_with_same_settings(server_run):
    first = server_run["generate"]["object"]
    re_obj = server_run["reimport"]["object"]
    assert server_run["reimport"]["result"] == ["FINISHED"]
    assert re_obj["dimensions"] == pytest.approx(first["dimensions"]) and re_obj["faces"] == first["faces"]
    assert re_obj["props"]["orbitmesh_job_id"] == first["props"]["orbitmesh_job_id"]
    assert server_run["regenerate_kwargs"]["seed"] == 7
    regen = server_run["regenerate"]
    assert regen["result"] == ["FINISHED"], regen["error"]
    obj = regen["object"]
    check_imported(obj, size=2.0, seed=7, backend="server")
    assert obj["props"]["orbitmesh_job_id"] != first["props"]["orbitmesh_job_id"]  # a new job ...
    assert obj["faces"] == first["faces"]  # ... same seed and settings, same mesh
    assert obj["dimensions"] == pytest.approx(first["dimensions"], rel=1e-5)


def test_old_job_list_loads_and_regenerates(server_run):
    old = server_run["old_jobs"]
    assert any("guidance_scale" in w for w in old["warnings"]) and any("thumbnail_id" in w for w in old["warnings"])
    assert old["settings"] == {**addon_settings.defaults(), "mode": "fast", "model": "tiny-random", "seed": 7,
                               "mc_resolution": 64, "target_faces": 1000, "texture_size": 256}
    assert old["result"] == ["FINISHED"], old["error"]
    check_imported(old["object"], size=2.0, seed=7, backend="server")
    first = server_run["generate"]["object"]
    assert old["object"]["faces"] == first["faces"]  # same seed and settings as the job it repeats
    assert old["statuses"] == ["done", "done"]  # the new job first, the old one kept
    assert "guidance_scale" not in old["saved_settings"]  # rewritten in today's shape


def test_job_list_is_persisted(server_run):
    statuses = server_run["job_statuses"]
    assert statuses == server_run["jobs_json_statuses"]
    assert statuses.count("done") == 3 and "cancelled" in statuses


def test_status_line_after_server_stops(server_run):
    res = server_run["refresh_after_stop"]
    assert not res["status_ok"] and "cannot reach" in res["status_line"] and "fix:" in res["status_line"]


def test_generate_operator_arguments_follow_the_contract(server_run):
    props = {p["name"]: p for p in server_run["properties"]["generate"]}
    # today's arguments, the contract's settings in their order after `prompt`
    assert list(props) == ["image_path", "image_name", "prompt", *addon_settings.NAMES, "size", "wait"]
    assert {"mode", "model", "text_to_image_model", "seed", "mc_resolution", "target_faces", "texture_size"} \
        <= set(addon_settings.NAMES)
    assert all(p["skip_save"] for p in props.values())
    kinds = {"choice": "ENUM", "str": "STRING", "int": "INT", "bool": "BOOLEAN"}
    for s in addon_settings.SETTINGS:
        p = props[s["name"]]
        assert (p["type"], p["label"], p["description"]) == (kinds[s["type"]], s["label"], s["help"]), s["name"]
        assert p["default"] == addon_settings.default(s)
        if s["type"] == "choice":
            assert p["items"] == addon_settings.choice_values(s["name"])
        if s["type"] == "int":
            assert p["min"] == s["minimum"]
            assert p["max"] == (s["maximum"] if s["maximum"] <= 2**31 - 1 else 2**31 - 1)  # int32: wider is left out
    assert props["seed"]["max"] == 2**31 - 1 and props["texture_size"]["max"] == 8192


def test_panel_properties_follow_the_contract(server_run):
    props = {p["name"]: p for p in server_run["properties"]["panel"]}
    panel_names = [s["name"] for s in addon_settings.PANEL]
    assert [n for n in props if n in addon_settings.BY_NAME] == panel_names
    assert "text_to_image_model" not in props  # an operator argument only
    texture = props["texture_size"]  # a dropdown of the presets
    assert texture["type"] == "ENUM" and texture["items"] == ["512", "1024", "2048", "4096"]
    assert texture["default"] == "1024"
    assert props["mc_resolution"]["type"] == "INT" and props["mc_resolution"]["default"] == 256
    assert (props["mc_resolution"]["min"], props["mc_resolution"]["max"]) == (32, 1024)


def test_panels_draw_with_real_ui_api(server_run):
    assert "no property 'seeed'" in server_run["stub_catches_typo"]  # the stub does fail on typos
    idle = server_run["draw_idle"]
    for source, prop in (("FILE", "image_path"), ("DATABLOCK", "image"), ("PROMPT", "prompt")):
        main = idle[source]["VIEW3D_PT_orbitmesh"]
        props = [kw["property"] for kw in calls_of(main, "prop")]
        assert prop in props and {"seed", "mc_resolution", "target_faces", "texture_size", "size"} <= set(props)
        drawn = [p for p in props if p in addon_settings.BY_NAME or p == "size"]  # every panel setting, in order
        assert drawn == [s["name"] for s in addon_settings.PANEL if s["type"] != "choice"] + ["size"]
        assert [kw["value"] for kw in calls_of(main, "prop_enum")] == addon_settings.choice_values("mode")
        assert "orbitmesh.generate" in [kw["operator"] for kw in calls_of(main, "operator")]
        assert [kw["text"] for kw in calls_of(idle[source]["VIEW3D_PT_orbitmesh_jobs"], "label")] == ["No jobs yet"]
        assert "orbitmesh.start_server" in [kw["operator"] for kw in calls_of(idle[source]["preferences"], "operator")]
    busy = server_run["draw_busy"]
    bars = calls_of(busy["VIEW3D_PT_orbitmesh"], "progress")
    assert bars and bars[0]["factor"] == pytest.approx(0.42) and bars[0]["text"] == "lrm | 42% | ETA 12 s"
    assert "orbitmesh.cancel" in [kw["operator"] for kw in calls_of(busy["VIEW3D_PT_orbitmesh"], "operator")]
    jobs = busy["VIEW3D_PT_orbitmesh_jobs"]
    ops = [kw["operator"] for kw in calls_of(jobs, "operator")]
    assert ops.count("orbitmesh.reimport") == 3 and ops.count("orbitmesh.open_folder") == 4
    assert ops.count("orbitmesh.regenerate") == 4
    assert len(calls_of(jobs, "template_icon")) == 4  # a thumbnail of each job's input
    icons = [kw.get("icon") for kw in calls_of(jobs, "label")]
    assert "CHECKMARK" in icons and "CANCEL" in icons


# ----- "In Blender" backend (full zip with the bundled orbitmesh wheel) -------------------------


def test_full_zip_bundles_orbitmesh(inprocess_run):
    assert inprocess_run["install"]["enabled"]
    bundled = inprocess_run["bundled_site_packages"]
    assert bundled and bundled in inprocess_run["python_paths"]
    refresh = inprocess_run["refresh"]
    assert refresh["status_ok"] and refresh["status_line"].startswith("In Blender: orbitmesh 0.1.0")
    assert refresh["orbitmesh_path"].startswith(bundled)  # the child imported the bundled wheel


def test_generate_in_blender_backend(inprocess_run):
    gen = inprocess_run["generate"]
    assert gen["result"] == ["FINISHED"], gen["error"] + gen.get("log", "")
    check_imported(gen["object"], size=1.5, seed=3, backend="inprocess")
    assert gen["job_json_status"] == "done"
    assert Path(gen["record"]["job_dir"]).parent == Path(gen["record"]["work_dir"])
    assert gen["object"]["props"]["orbitmesh_job_dir"] == gen["record"]["job_dir"]
    assert gen["after_undo"] == gen["before"]
    running = [p for status, _stage, p in gen["progress_samples"] if status == "running"]
    assert any(0.0 < p < 1.0 for p in running), gen["progress_samples"]  # the jsonl events carry `progress`
    assert running == sorted(running)  # and it never steps back
    assert len({stage for status, stage, _ in gen["progress_samples"] if status == "running"}) >= 3


def test_cancel_in_blender_backend(inprocess_run):
    c = inprocess_run["cancel"]
    assert c["result"] == ["CANCELLED"] and c["record_status"] == "cancelled"
    assert c["after"] == c["before"] and c["cursor_unchanged"] and c["glb_files"] == []
    assert c["job_json_statuses"] == ["cancelled"]  # the job folder is consistent too


def test_crashing_child_does_not_take_blender_down(inprocess_run):
    crash = inprocess_run["crash"]
    assert crash["blender_alive"] and crash["unchanged"] and crash["record_status"] == "failed"
    assert "killed" in crash["error"] and "(fix: " in crash["error"]
    assert "Traceback" not in crash["error"]
    labels = [kw.get("text") for kw in calls_of(inprocess_run["draw_after"]["VIEW3D_PT_orbitmesh"], "label")]
    assert any(t and "killed" in t for t in labels)


def test_in_blender_jobs_in_a_row_share_one_warm_worker(inprocess_run):
    assert inprocess_run["keep_loaded_minutes"] == 10  # the default preference
    first, second = inprocess_run["generate"], inprocess_run["second"]
    assert second["result"] == ["FINISHED"], second["error"]
    check_imported(second["object"], size=1.5, seed=4, backend="inprocess")
    pid = first["worker_pid"]
    assert pid and second["worker_pid"] == pid  # job.json: the same process ran both jobs
    assert second["warm_pids"] == [pid]
    assert inprocess_run["cancel"]["warm_pids"] == [pid]  # the cancel stopped the job, the child lives on
    labels = [kw.get("text") for kw in calls_of(inprocess_run["draw_warm"], "label")]
    assert f"Backend loaded (process {inprocess_run['after_kill']['worker_pid']})" in labels


def test_keep_loaded_zero_runs_a_fresh_child_per_job(inprocess_run):
    fresh = inprocess_run["fresh"]
    assert fresh["result"] == ["FINISHED"], fresh["error"]
    assert fresh["warm_pids"] == []  # the warm worker retired when the preference changed
    assert fresh["worker_pid"] and fresh["worker_pid"] != inprocess_run["generate"]["worker_pid"]


def test_a_killed_worker_fails_only_its_job(inprocess_run):
    killed = inprocess_run["killed"]
    assert killed["killed_pid"] and killed["result"] is None and killed["record_status"] == "failed"
    assert "killed" in killed["error"] and "(fix: " in killed["error"] and "killed" in killed["panel_error"]
    after = inprocess_run["after_kill"]
    assert after["result"] == ["FINISHED"], after["error"]
    assert after["worker_pid"] and after["worker_pid"] != killed["killed_pid"]  # a fresh child
    assert after["warm_pids"] == [after["worker_pid"]]


def test_disabling_the_addon_ends_the_worker(inprocess_run):
    disable = inprocess_run["disable"]
    assert disable["result"] == ["FINISHED"], disable["error"]
    assert disable["workers_before"] == 1 and disable["workers_alive_after"] == [False]
    assert disable["exit_reasons"] == ["shutdown"]
