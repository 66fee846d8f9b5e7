"""The add-on's bpy-free parts (blender_addon/core): HTTP client errors, multipart encoding, the
subprocess job protocol (with small stand-in CLIs: real child processes that speak the JSON-lines
protocol), the persisted job list (including one written by the previous version), the settings,
flags and regenerate arguments derived from the contract, the version, health formatting and the
PNG encoder. No Blender needed."""

from __future__ import annotations

import ast
import email.parser
import json
import socket
import struct
import sys
import textwrap
import time
import tomllib
import zlib
from pathlib import Path

import numpy as np
import pytest

from blender_addon import contract
from blender_addon.core import backends, client, health, jobs, manifest, placement, png, session
from blender_addon.core import settings as contract_settings
from blender_addon.core.errors import AddonError


def test_normalize_url():
    assert client.normalize_url("127.0.0.1:8765/") == "http://127.0.0.1:8765"
    assert client.normalize_url("http://localhost:9000") == "http://localhost:9000"
    for bad in ("", "ftp://host", "http://host:notaport"):
        with pytest.raises(client.ServerError) as info:
            client.normalize_url(bad)
        assert info.value.fix and info.value.code == "bad_url"


def test_unreachable_server_says_how_to_fix():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    with pytest.raises(client.ServerUnreachable) as info:
        client.Client(f"http://127.0.0.1:{port}", timeout=2).health()
    assert f"127.0.0.1:{port}" in info.value.message and "orbitmesh serve" in info.value.fix
    with pytest.raises(AddonError) as info:  # the backend passes the client's error on, fix included
        backends.ServerBackend(f"http://127.0.0.1:{port}").health(timeout=2)
    assert "cannot reach" in info.value.message and info.value.fix


def test_multipart_body_parses_back():
    image = bytes(range(256)) * 10
    body, ctype = client.encode_multipart({"settings": json.dumps({"seed": 5})},
                                          {"image": ('my "chair".png', image, "image/png")})
    msg = email.parser.BytesParser().parsebytes(b"Content-Type: " + ctype.encode() + b"\r\n\r\n" + body)
    parts = {p.get_param("name", header="content-disposition"): p for p in msg.get_payload()}
    assert json.loads(parts["settings"].get_payload(decode=True)) == {"seed": 5}
    assert parts["image"].get_payload(decode=True) == image
    assert parts["image"].get_filename() == "my _chair_.png"


def fake_cli(tmp_path: Path, body: str) -> list[str]:
    """argv of a stand-in for `orbitmesh generate --progress jsonl` (the real one runs in the Blender tests)."""
    script = tmp_path / "fake_generate.py"
    script.write_text("import json, os, sys, time\n"
                      "def emit(**o):\n    print(json.dumps(o), flush=True)\n" + textwrap.dedent(body))
    return [sys.executable, str(script)]


def spec(tmp_path: Path) -> backends.JobSpec:
    return backends.JobSpec(name="chair", work_dir=tmp_path / "work", image_path=str(tmp_path / "in.png"))


def test_subprocess_job_follows_progress_to_done(tmp_path):
    argv = fake_cli(tmp_path, """
        job = os.path.join(os.getcwd(), "20260101-chair-1")
        os.makedirs(job)
        json.dump({"status": "running", "stages": ["a", "b"]}, open(os.path.join(job, "job.json"), "w"))
        emit(event="progress", stage="a", step=1, total=2, message="half", eta_s=1.0)
        print("some library chatter")
        emit(event="progress", stage="b", step=1, total=2, message="b half", eta_s=0.5)
        open(os.path.join(job, "model.glb"), "wb").write(b"glTF")
        json.dump({"status": "done", "versions": {"orbitmesh": "9.9"}}, open(os.path.join(job, "job.json"), "w"))
        emit(event="done", result={"job_dir": job, "glb_path": os.path.join(job, "model.glb"), "model": "m"})
    """)
    handle = backends.SubprocessJob(argv, backends.python_env([]), spec(tmp_path))
    state = handle.wait(30)
    assert state.status == "done" and state.progress == 1.0
    assert state.glb_path.endswith("model.glb") and Path(state.glb_path).is_file()
    assert state.version == "9.9" and state.result["model"] == "m"
    assert "some library chatter" in (tmp_path / "work" / "generate.log").read_text()


def wait_for(handle: backends.JobHandle, message: str, timeout: float = 20.0) -> backends.JobState:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = handle.state()
        if state.message == message:
            return state
        time.sleep(0.02)
    raise AssertionError(f"no event with message {message!r} within {timeout} s: {handle.state()}")


def test_subprocess_job_progress_is_the_backends_number(tmp_path):
    # The job.json stage list would give (2 + 0.5) / 4 = 0.625: the add-on must not compute its own.
    # The stand-in waits for a file "goN" (in its working folder) before event N, so each state is seen.
    argv = fake_cli(tmp_path, """
        def step(n):
            while not os.path.exists("go%d" % n):
                time.sleep(0.01)
        job = os.path.join(os.getcwd(), "j")
        os.makedirs(job)
        json.dump({"status": "running", "stages": ["a", "b", "c", "d"]}, open(os.path.join(job, "job.json"), "w"))
        emit(event="progress", stage="c", step=1, total=2, message="first", eta_s=None, progress=0.37)
        step(1)
        emit(event="progress", stage="c", step=1, total=2, message="lower", eta_s=None, progress=0.2)
        step(2)
        emit(event="progress", stage="d", step=0, total=0, message="none", eta_s=None)
        step(3)
        emit(event="progress", stage="d", step=1, total=2, message="more", eta_s=None, progress=0.81)
        time.sleep(30)
    """)
    handle = backends.SubprocessJob(argv, backends.python_env([]), spec(tmp_path))
    work = tmp_path / "work"
    try:
        assert wait_for(handle, "first").progress == pytest.approx(0.37)
        (work / "go1").touch()
        assert wait_for(handle, "lower").progress == pytest.approx(0.37)  # never steps back
        (work / "go2").touch()
        assert wait_for(handle, "none").progress == pytest.approx(0.37)  # an event without it keeps it
        (work / "go3").touch()
        state = wait_for(handle, "more")
        assert state.progress == pytest.approx(0.81) and state.stage == "d" and state.status == "running"
    finally:
        handle.request_cancel()
    assert handle.wait(15).status == "cancelled"


@pytest.mark.parametrize("event, expected", [({"progress": 0.5}, 0.5), ({}, 0.0), ({"progress": None}, 0.0),
                                             ({"progress": 1.7}, 1.0), ({"progress": -1}, 0.0),
                                             ({"progress": "x"}, 0.0), ({"progress": float("nan")}, 0.0)])
def test_event_progress_is_clamped(event, expected):
    assert backends.event_progress(event) == expected


def test_subprocess_job_error_event(tmp_path):
    argv = fake_cli(tmp_path, """
        emit(event="error", message="image not found: x.png", fix="check the path")
        sys.exit(2)
    """)
    state = backends.SubprocessJob(argv, backends.python_env([]), spec(tmp_path)).wait(30)
    assert state.status == "failed"
    assert state.error == {"message": "image not found: x.png", "fix": "check the path"}


def test_subprocess_job_cancel_terminates_and_marks_job_folder(tmp_path):
    argv = fake_cli(tmp_path, """
        job = os.path.join(os.getcwd(), "20260101-chair-2")
        os.makedirs(job)
        json.dump({"status": "running", "stage": "02-lrm"}, open(os.path.join(job, "job.json"), "w"))
        emit(event="progress", stage="lrm", step=0, total=3, message="working", eta_s=None)
        time.sleep(60)
    """)
    handle = backends.SubprocessJob(argv, backends.python_env([]), spec(tmp_path))
    for _ in range(200):
        if handle.state().status == "running":
            break
        time.sleep(0.05)
    handle.request_cancel()
    state = handle.wait(15)
    assert state.status == "cancelled" and handle.proc.poll() is not None
    record = json.loads((tmp_path / "work" / "20260101-chair-2" / "job.json").read_text())
    assert record["status"] == "cancelled" and record["error"]["message"] == "cancelled by the user"


def test_subprocess_job_unexpected_exit_is_a_clear_failure(tmp_path):
    argv = fake_cli(tmp_path, """
        sys.stderr.write("ImportError: no module named torch\\n")
        sys.exit(3)
    """)
    state = backends.SubprocessJob(argv, backends.python_env([]), spec(tmp_path)).wait(30)
    assert state.status == "failed"
    assert "exit code 3" in state.error["message"] and "no module named torch" in state.error["message"]
    assert "generate.log" in state.error["fix"]


def test_subprocess_backend_argv_and_missing_python(tmp_path):
    backend = backends.SubprocessBackend(sys.executable, ["/opt/site"], model_dir="/models", device="cpu")
    s = backends.JobSpec(name="p", work_dir=tmp_path, prompt="a chair",
                         settings={"mode": "fast", "model": "", "seed": 4, "texture_size": 512})
    argv = backend.argv(s)
    assert argv[:5] == [sys.executable, "-m", "orbitmesh", "generate", "--prompt"] and argv[5] == "a chair"
    assert argv[argv.index("--seed") + 1] == "4" and "--model" not in argv  # empty model = default
    assert argv[argv.index("--progress") + 1] == "jsonl" and argv[argv.index("--output-dir") + 1] == str(tmp_path)
    assert argv[-4:] == ["--device", "cpu", "--model-dir", "/models"]
    assert backend.env()["PYTHONPATH"].split(":")[0] == "/opt/site"
    with pytest.raises(AddonError) as info:
        backends.SubprocessBackend(str(tmp_path / "no-python"), [])
    assert "not found" in info.value.message and info.value.fix


def test_job_list_persists_and_marks_interrupted_jobs(tmp_path):
    path = tmp_path / "jobs.json"
    jl = jobs.JobList(path)
    done = jl.add(jobs.JobRecord(id="a", name="chair", backend="server", source_kind="image", status="done",
                                 settings={"seed": 1}))
    jl.add(jobs.JobRecord(id="b", name="lamp", backend="inprocess", source_kind="prompt", status="running"))
    again = jobs.JobList(path)
    assert [r.id for r in again.records] == ["b", "a"]
    assert again.get("a").settings == {**contract_settings.defaults(), **done.settings}  # missing -> defaults
    assert again.get("a").status == "done"
    assert again.get("b").status == "failed" and "interrupted" in again.get("b").error["message"]
    again.clear_finished()
    assert jobs.JobList(path).records == []
    path.write_text("{not json")
    assert jobs.JobList(path).records == []  # a damaged list starts over instead of failing


def test_request_cancel_reaches_active_handles(tmp_path):
    class Handle:
        cancelled = False

        def request_cancel(self):
            self.cancelled = True

    a, b = Handle(), Handle()
    session.ACTIVE.update(a=a, b=b)
    try:
        assert session.request_cancel("b") == 1 and b.cancelled and not a.cancelled
        assert session.request_cancel() == 2 and a.cancelled
    finally:
        session.ACTIVE.clear()


# ----- the contract: settings, flags and regenerate arguments derived from it ---------------------


def sample_value(s: dict):
    """A valid, non-default value of contract setting ``s``."""
    if s["type"] == "choice":
        return next(v for v, _, _ in s["choices"] if v != s["default"])
    if s["type"] == "str":
        return f"value-of-{s['name']}"
    if s["type"] == "bool":
        return not s["default"]
    return s["default"] + 1 if s["maximum"] is None or s["default"] < s["maximum"] else s["default"] - 1


def test_every_contract_setting_maps_to_its_flag_in_argv(tmp_path):
    assert [s["name"] for s in contract.SETTINGS] == list(contract_settings.NAMES)
    values = {s["name"]: sample_value(s) for s in contract.SETTINGS}
    contract_settings.check(values)  # the sample values are valid
    backend = backends.SubprocessBackend(sys.executable, [])
    argv = backend.argv(backends.JobSpec(name="p", work_dir=tmp_path, image_path="in.png", settings=values))
    for s in contract.SETTINGS:
        assert argv.count(s["flag"]) == 1, s["flag"]
        if s["type"] != "bool":  # a switch is its flag alone (--no-carve), the others take a value
            assert argv[argv.index(s["flag"]) + 1] == str(values[s["name"]])
    # ... in contract order, right after the fixed options, and nothing else that looks like a setting
    expected = [x for s in contract.SETTINGS
                for x in ((s["flag"],) if s["type"] == "bool" else (s["flag"], str(values[s["name"]])))]
    assert contract_settings.cli_args(values) == expected
    assert "--text-to-image-model" in argv  # the setting the old hand-written table had to remember


def test_empty_optional_settings_and_unknown_keys_stay_off_the_command_line(tmp_path):
    values = {**contract_settings.defaults(), "seed": 9, "not_a_setting": 3}
    args = contract_settings.cli_args(values)
    optional = [s["flag"] for s in contract.SETTINGS if s["optional"]]
    assert optional and not set(optional) & set(args)  # "" = the backend's default: no flag at all
    assert args[args.index("--seed") + 1] == "9" and "not_a_setting" not in " ".join(args)
    assert backends.JobSpec(name="x", work_dir=tmp_path, settings=values).clean_settings() == \
        {k: v for k, v in values.items() if k in contract_settings.BY_NAME and v != ""}


def test_defaults_follow_the_contract():
    for s in contract.SETTINGS:
        assert contract_settings.defaults()[s["name"]] == ("" if s["default"] is None else s["default"])
        assert contract_settings.problem(s, contract_settings.default(s)) is None  # every default is valid
    assert contract_settings.choice_values("mode") == [c[0] for c in contract_settings.BY_NAME["mode"]["choices"]]
    assert {s["name"] for s in contract_settings.PANEL} == {s["name"] for s in contract.SETTINGS if s["panel"]}


@pytest.mark.parametrize("values, named", [
    ({"seed": -1}, "seed"),
    ({"mc_resolution": 4096}, "mc_resolution"),
    ({"texture_size": 1024.0}, "texture_size"),
    ({"target_faces": True}, "target_faces"),
    ({"mode": "turbo"}, "mode"),
    ({"model": "m" * 513}, "model"),
    ({"guidance": 3}, "guidance"),
])
def test_settings_check_names_the_setting_and_the_fix(values, named):
    with pytest.raises(AddonError) as info:
        contract_settings.check({**contract_settings.defaults(), **values})
    assert named in info.value.message and info.value.fix


def test_switch_settings_are_checkboxes_and_their_off_flag(tmp_path):
    """A bool setting: true/false only, the add-on's checkbox, and on the command line only when it differs
    from the default, as its --no-x flag, which the real backend CLI reads back."""
    from orbitmesh.cli import build_parser

    switches = [s for s in contract.SETTINGS if s["type"] == "bool"]
    assert {s["name"] for s in switches} >= {"input_texture", "carve"}
    for s in switches:
        assert s["default"] is True and s["flag"] == "--no-" + s["name"].replace("_", "-")
        assert contract_settings.problem(s, False) is None and contract_settings.problem(s, True) is None
        for bad in (1, 0, "yes", "", None):
            assert "true or false" in contract_settings.problem(s, bad)
    values = {**contract_settings.defaults(), "input_texture": False}
    args = contract_settings.cli_args(values)
    assert "--no-input-texture" in args and "--no-carve" not in args
    assert not [a for a in args if a in ("True", "False")]  # a switch never takes a value
    parsed = build_parser().parse_args(["generate", "in.png", *args])
    assert parsed.input_texture is False and parsed.carve is True
    with pytest.raises(AddonError, match="carve"):
        contract_settings.check({**contract_settings.defaults(), "carve": "no"})
    restored, notes = contract_settings.from_saved({"carve": False, "input_texture": 1})
    assert restored["carve"] is False and restored["input_texture"] is True and "input_texture" in notes[0]


def test_switch_settings_become_bool_properties(run_python, repo_root):
    """In a fresh interpreter (bpy cannot load after torch in this one): each switch is a BoolProperty, on by
    default, in the panel and as a SKIP_SAVE operator argument."""
    code = textwrap.dedent(f"""
        import sys
        try:
            import bpy  # noqa: F401
        except ImportError:
            print("NO-BPY"); raise SystemExit(0)
        sys.path.insert(0, {str(repo_root)!r})
        from blender_addon import properties
        from blender_addon.core import settings
        for name in ("input_texture", "carve"):
            for operator in (False, True):
                p = properties.setting_property(settings.BY_NAME[name], operator=operator)
                print(name, operator, p.function.__name__, p.keywords["default"], "options" in p.keywords)
    """)
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    if "NO-BPY" in done.stdout:
        pytest.skip("bpy is not importable here")
    rows = [line.split() for line in done.stdout.splitlines()]
    assert rows == [[name, op, "BoolProperty", "True", op] for name in ("input_texture", "carve")
                    for op in ("False", "True")]


def test_regenerate_kwargs_repeat_every_setting():
    values = {s["name"]: sample_value(s) for s in contract.SETTINGS}
    rec = jobs.JobRecord(id="a", name="chair", backend="server", source_kind="image", image_path="/in/chair.png",
                         settings=values, size=2.5)
    assert jobs.regenerate_kwargs(rec) == {"size": 2.5, "image_path": "/in/chair.png", **values}
    rec = jobs.JobRecord(id="b", name="lamp", backend="server", source_kind="prompt", prompt="a lamp",
                         settings=contract_settings.defaults())
    kw = jobs.regenerate_kwargs(rec)
    assert kw["prompt"] == "a lamp" and "image_path" not in kw
    assert not any(s["name"] in kw for s in contract.SETTINGS if s["optional"])  # "" = the backend's default


# A record as the previous add-on version (0.1.0, before the contract) wrote it to jobs.json:
# six settings, no text_to_image_model; plus keys this version does not know.
OLD_RECORD = {
    "id": "20250101-120000-chair-ab12", "name": "chair", "backend": "server", "source_kind": "image",
    "image_path": "/in/chair.png", "prompt": "",
    "settings": {"mode": "fast", "model": "", "seed": 7, "mc_resolution": 64, "target_faces": 1000,
                 "texture_size": 256, "guidance_scale": 3.5},
    "size": 2.0, "status": "done", "stage": "export", "message": "done", "progress": 1.0, "eta_s": None,
    "error": None, "work_dir": "/jobs/w", "job_dir": "", "glb_path": "/jobs/w/model.glb", "preview_path": "",
    "remote_id": "r1", "version": "0.1.0", "model": "tiny-random", "object_name": "chair",
    "created": 1735732800.0, "finished": 1735732810.0, "thumbnail_id": 12,
}


def test_old_job_list_loads_and_regenerates(tmp_path, capsys):
    path = tmp_path / "jobs.json"
    old_missing = {**OLD_RECORD, "id": "old-2", "settings": {"seed": 3, "mode": "turbo"}}
    path.write_text(json.dumps({"jobs": [OLD_RECORD, old_missing, {"name": "no id"}]}))
    jl = jobs.JobList(path)
    assert [r.id for r in jl.records] == [OLD_RECORD["id"], "old-2"]  # the unreadable record is skipped
    rec = jl.get(OLD_RECORD["id"])
    assert rec.status == "done" and rec.glb_path == "/jobs/w/model.glb" and rec.size == 2.0
    # Missing keys (the settings added since) take their defaults; a value no longer allowed does too.
    assert rec.settings == {**contract_settings.defaults(), "mode": "fast", "model": "", "seed": 7,
                            "mc_resolution": 64, "target_faces": 1000, "texture_size": 256}
    assert jl.get("old-2").settings == {**contract_settings.defaults(), "seed": 3}
    # Regenerating repeats every setting but the empty optional ones ("" = the backend's default).
    assert jobs.regenerate_kwargs(rec) == {"size": 2.0, "image_path": "/in/chair.png",
                                           **{k: v for k, v in rec.settings.items() if v != ""}}
    text = "\n".join(jl.warnings)
    assert "guidance_scale" in text and "thumbnail_id" in text and "mode must be one of" in text
    assert "cannot be read" in text
    printed = capsys.readouterr().out
    assert all(f"OrbitMesh: {w}" in printed for w in jl.warnings)
    jl.save()  # saved again in today's shape: loads without a warning
    saved = json.loads(path.read_text())["jobs"][0]
    assert "guidance_scale" not in saved["settings"] and "thumbnail_id" not in saved
    assert jobs.JobList(path).warnings == []


def test_object_metadata_carries_the_addon_version():
    rec = jobs.JobRecord(id="a", name="chair", backend="inprocess", source_kind="image",
                         settings={**contract_settings.defaults(), "seed": 5}, version="9.9")
    meta = jobs.object_metadata(rec)
    assert meta["addon_version"] == manifest.ADDON_VERSION and meta["version"] == "9.9" and meta["seed"] == 5
    assert meta["settings"] == rec.settings and meta["mode"] == "fast"
    assert (meta["licence"], meta["commercial"], meta["licences"]) == ("", "", {})  # an older backend said nothing


LICENCES = {"lrm": {"name": "triposr", "licence": "MIT", "commercial": "yes", "condition": None},
            "video": {"name": "sv3d_p", "licence": "Stability AI Community License", "commercial": "conditional",
                      "condition": "free under USD 1M annual revenue"}}


def test_object_metadata_carries_the_licences_of_the_models_used(tmp_path):
    rec = jobs.JobRecord(id="a", name="chair", backend="server", source_kind="image",
                         settings=contract_settings.defaults(), licences=LICENCES)
    meta = jobs.object_metadata(rec)  # -> orbitmesh_licence, orbitmesh_commercial, orbitmesh_licences
    assert meta["licence"] == "triposr: MIT; sv3d_p: Stability AI Community License"
    assert meta["commercial"] == "conditional"  # the least free model decides
    assert meta["licences"] == LICENCES
    vf = {"lrm": {"name": "vfusion3d", "licence": "CC-BY-NC 4.0", "commercial": "no"}}
    assert jobs.commercial_use({**LICENCES, **vf}) == "no"
    assert jobs.commercial_use({"lrm": {"name": "x", "licence": "unknown", "commercial": "unknown"}}) == "unknown"
    # The job list keeps them across a restart; a damaged value does not break loading.
    path = tmp_path / "jobs.json"
    jl = jobs.JobList(path)
    jl.add(rec)
    assert jobs.JobList(path).records[0].licences == LICENCES
    data = json.loads(path.read_text())
    data["jobs"][0]["licences"] = ["not", "a", "dict"]
    path.write_text(json.dumps(data))
    assert jobs.JobList(path).records[0].licences == {}


def test_commercial_only_preference_maps_to_the_backends(tmp_path):
    """The add-on preference "Commercial use only" (preferences.make_backend passes it to either backend):
    the subprocess gets the CLI flag, which the real CLI parses into Settings.commercial_only; the server gets
    a JSON key beside the settings, which the real server accepts and applies."""
    from orbitmesh.cli import build_parser
    from orbitmesh.cli.common import settings_from_args
    from orbitmesh.server.jobs import pop_commercial_only

    spec = backends.JobSpec(name="p", work_dir=tmp_path, image_path="in.png", settings={"seed": 3})
    plain = backends.SubprocessBackend(sys.executable, []).argv(spec)
    strict = backends.SubprocessBackend(sys.executable, [], commercial_only=True).argv(spec)
    assert "--commercial-only" not in plain and strict.count("--commercial-only") == 1
    config = ["--config", str(tmp_path / "none.toml")]
    args = build_parser().parse_args(strict[strict.index("generate"):] + config)
    assert settings_from_args(args).commercial_only is True
    args = build_parser().parse_args(plain[plain.index("generate"):] + config)
    assert settings_from_args(args).commercial_only is False
    server = backends.ServerBackend("http://127.0.0.1:1")
    assert server.job_fields(spec) == {"seed": 3}
    fields = backends.ServerBackend("http://127.0.0.1:1", commercial_only=True).job_fields(spec)
    assert fields == {"seed": 3, "commercial_only": True}
    assert pop_commercial_only(fields) is True and fields == {"seed": 3}  # the server takes it out of the settings
    source = (Path(__file__).parents[2] / "blender_addon" / "preferences.py").read_text()
    assert source.count("commercial_only=prefs.commercial_only") == 2  # both backends get the preference


# ----- version, health line, PNG, placement -----------------------------------------------------


def test_addon_version_is_read_from_the_manifest(repo_root):
    data = tomllib.loads((repo_root / "blender_addon" / "blender_manifest.toml").read_text())
    assert manifest.ADDON_VERSION == data["version"]
    # ... and not typed anywhere else in the add-on's code
    for path in (repo_root / "blender_addon").rglob("*.py"):
        strings = [n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant)]
        assert data["version"] not in strings, f"{path.name} spells out the version"


def test_status_line_marks_licences_and_commercial_only():
    data = {"version": "1", "device": {"device": "cpu"}, "commercial_only": True,
            "models": [{"name": "vfusion3d", "available": True, "commercial": "no"},
                       {"name": "triposr", "available": True, "commercial": "yes"},
                       {"name": "sv3d_p", "available": True, "commercial": "conditional"},
                       {"name": "sv3d_u", "available": False, "commercial": "conditional"}]}
    assert health.status_line("inprocess", data) == (
        "In Blender: orbitmesh 1 | cpu | models: vfusion3d (non-commercial), triposr, sv3d_p (conditional licence)"
        " | commercial use only")


def test_status_line_and_panel_values():
    data = {"version": "1.2.3", "device": {"device": "cuda", "gpu": "RTX", "vram_total_gb": 24, "vram_free_gb": 20},
            "models": [{"name": "a", "available": True}, {"name": "b", "available": False}],
            "modes": ["fast"], "default_model": "a", "queue_length": 2, "busy": True}
    assert health.status_line("server", data) == "Server 1.2.3 | cuda RTX (20/24 GB free) | models: a | queue 2 (busy)"
    assert health.status_line("inprocess", {"version": "1"}) == "In Blender: orbitmesh 1 | ? | models: none found"
    ok = health.panel_values("server", data, None)
    assert ok == {"status_ok": True, "status_line": health.status_line("server", data), "modes": "fast",
                  "models": "a", "default_model": "a"}
    bad = health.panel_values("server", None, AddonError("cannot reach it", fix="start it"))
    assert bad == {"status_ok": False, "status_line": "cannot reach it (fix: start it)",
                   "modes": ",".join(contract_settings.choice_values("mode"))}


def read_png(path: Path) -> np.ndarray:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, size = 8, b"", None
    while pos < len(data):
        (n,), kind = struct.unpack(">I", data[pos:pos + 4]), data[pos + 4:pos + 8]
        body = data[pos + 8:pos + 8 + n]
        assert struct.unpack(">I", data[pos + 8 + n:pos + 12 + n])[0] == zlib.crc32(kind + body) & 0xFFFFFFFF
        if kind == b"IHDR":
            size = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    w, h = size
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + 4 * w)
    assert (rows[:, 0] == 0).all()  # filter type "none" on every row
    return rows[:, 1:].reshape(h, w, 4)


def test_png_encoding_flips_rows_and_encodes_srgb(tmp_path):
    px = np.zeros((2, 3, 3), np.float32)  # Blender's bottom row first
    px[0, :, 0] = 1.0  # bottom row red
    px[1, :, 2] = 0.5  # top row half blue (linear)
    rgba = png.to_rgba8(px, linear=True)
    assert rgba.shape == (2, 3, 4) and rgba.dtype == np.uint8
    assert rgba[1, 0].tolist() == [255, 0, 0, 255] and rgba[0, 0].tolist() == [0, 0, 188, 255]  # 0.5 -> sRGB 188
    assert png.to_rgba8(px, linear=False)[0, 0].tolist() == [0, 0, 128, 255]
    grey = png.to_rgba8(np.full((1, 1, 1), 0.25, np.float32), linear=False)
    assert grey[0, 0].tolist() == [64, 64, 64, 255]
    png.write_png(tmp_path / "x.png", rgba)
    assert np.array_equal(read_png(tmp_path / "x.png"), rgba) and not list(tmp_path.glob("*.tmp.png"))


def test_fit_to_size_puts_bottom_centre_at_origin():
    scale, offset = placement.fit_to_size((1.0, -2.0, 0.5), (3.0, 2.0, 1.5), 2.0)
    assert scale == pytest.approx(0.5) and offset == pytest.approx((-2.0, 0.0, -0.5))
    assert placement.fit_to_size((1, 1, 1), (1, 1, 1), 3.0)[0] == 1.0  # a point is not blown up
