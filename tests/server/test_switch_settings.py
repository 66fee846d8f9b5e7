"""The server's side of the switch settings (input_texture, carve): JSON true/false reach the run, anything
else is a 400 naming the setting, before a job folder exists."""

from __future__ import annotations

import json
import time

from orbitmesh.server.app import ServerConfig


def test_switches_are_json_booleans_and_reach_the_run(tmp_path, cpu_settings, start_server, http_request):
    from orbitmesh.errors import ModelError

    seen: list = []

    def runner(request, settings, tracker):
        seen.append(request)
        raise ModelError("stopped by the test")

    server = start_server(cpu_settings(tmp_path), ServerConfig(port=0), runner=runner)
    headers = {"Content-Type": "application/json"}
    try:
        for bad in ("false", 0, 1, None):
            body = json.dumps({"prompt": "a chair", "model": "tiny-random", "carve": bad}).encode()
            status, err, _ = http_request(server.url, "POST", "/jobs", headers, body)
            assert status == 400 and err["error"] == "invalid_settings" and "carve" in err["message"], err
        assert [p for p in (tmp_path / "jobs").iterdir() if p.is_dir()] == []
        body = json.dumps({"prompt": "a chair", "model": "tiny-random", "input_texture": False}).encode()
        status, job, _ = http_request(server.url, "POST", "/jobs", headers, body)
        assert status == 202
        status, record, _ = http_request(server.url, "GET", f"/jobs/{job['id']}")
        assert record["settings"]["input_texture"] is False and record["settings"]["carve"] is True
        for _ in range(200):
            if seen:
                break
            time.sleep(0.05)
        assert seen and seen[0].input_texture is False and seen[0].carve is True
    finally:
        server.close()
