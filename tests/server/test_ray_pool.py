"""The server on a Ray worker pool: a local Ray instance with 2 CPU workers running the real pipeline (tiny-random),
then a simulated two-node cluster (``ray.cluster_utils.Cluster``). Skipped where Ray is not installed
(``pip install "orbitmesh[ray]"``)."""

from __future__ import annotations

import json
import threading
import time
from types import SimpleNamespace

import pytest
from PIL import Image

ray = pytest.importorskip("ray")

from orbitmesh.executors.ray_pool import RayExecutor  # noqa: E402
from orbitmesh.server.app import ServerConfig, make_server  # noqa: E402

pytestmark = pytest.mark.slow


def submit(http_request, url: str, image: bytes, settings: dict) -> str:
    body = (b"--B\r\nContent-Disposition: form-data; name=\"image\"; filename=\"obj.png\"\r\n\r\n" + image
            + b"\r\n--B\r\nContent-Disposition: form-data; name=\"settings\"\r\n\r\n" + json.dumps(settings).encode()
            + b"\r\n--B--\r\n")
    status, data, _ = http_request(url, "POST", "/jobs", {"Content-Type": "multipart/form-data; boundary=B"}, body)
    assert status == 202, data
    return data["id"]


def wait(http_request, url: str, job_id: str, until=("done", "failed", "cancelled"), timeout: float = 120,
         check=lambda job: True) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, job, _ = http_request(url, "GET", f"/jobs/{job_id}")
        if job["status"] in until and check(job):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} did not reach {until}: {job}")


@pytest.fixture(scope="module")
def pool():
    """A local Ray instance with a pool of 2 CPU workers (models load once per worker)."""
    executor = RayExecutor.start("local", workers=2)
    yield executor
    executor.close()
    ray.shutdown()


def serve(settings, pool: RayExecutor):
    """A server on ``pool`` (borrowed: the module's pool outlives each server, which would close its own)."""
    borrowed = SimpleNamespace(name=pool.name, workers=pool.workers, run=pool.run, close=lambda: None)
    server = make_server(settings, ServerConfig(port=0), executor=borrowed)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def image(object_image, png_bytes) -> bytes:
    return png_bytes(object_image(128))


def test_jobs_run_in_parallel_on_the_pool_with_their_files_back(pool, tmp_path, cpu_settings, http_request, image,
                                                                small_request):
    server = serve(cpu_settings(tmp_path), pool)
    try:
        ids = [submit(http_request, server.url, image, {**small_request, "seed": i}) for i in range(6)]
        jobs = [wait(http_request, server.url, job_id) for job_id in ids]
        assert [j["status"] for j in jobs] == ["done"] * 6, [j["error"] for j in jobs]
        workers = {j["result"]["worker"] for j in jobs}
        assert len(workers) == 2 and all(w.startswith("ray:") for w in workers)  # both workers took jobs
        for job in jobs:
            status, glb, _ = http_request(server.url, "GET", f"/jobs/{job['id']}/files/model.glb")
            assert status == 200 and glb[:4] == b"glTF"  # the GLB came back to the server's job folder
            assert job["progress"] == 1.0 and "preprocessed.png" in job["files"]
        status, health, _ = http_request(server.url, "GET", "/health")
        assert health["executor"] == "ray" and health["worker"]["workers"] == 2
    finally:
        server.close()


def test_cancel_reaches_queued_and_running_jobs_on_the_pool(pool, tmp_path, cpu_settings, http_request, image,
                                                           small_request):
    server = serve(cpu_settings(tmp_path), pool)
    slow = {**small_request, "mc_resolution": 192, "target_faces": 20000}
    try:
        running = [submit(http_request, server.url, image, {**slow, "seed": i}) for i in range(2)]
        queued = submit(http_request, server.url, image, small_request)
        status, job, _ = http_request(server.url, "POST", f"/jobs/{queued}/cancel")
        assert status == 200 and job["status"] == "cancelled"
        wait(http_request, server.url, running[0], until=("running",), check=lambda j: j["progress"] > 0)
        status, job, _ = http_request(server.url, "POST", f"/jobs/{running[0]}/cancel")
        assert status == 200 and job["cancel_requested"] is True
        cancelled = wait(http_request, server.url, running[0])
        assert cancelled["status"] == "cancelled" and "model.glb" not in cancelled["files"]
        assert wait(http_request, server.url, running[1])["status"] == "done"  # the other worker went on
    finally:
        server.close()


def test_a_killed_worker_is_replaced_and_its_job_runs_again(pool, tmp_path, cpu_settings, http_request, image,
                                                            small_request):
    server = serve(cpu_settings(tmp_path), pool)
    try:
        job_id = submit(http_request, server.url, image, {**small_request, "mc_resolution": 160})
        wait(http_request, server.url, job_id, until=("running",), check=lambda j: j["progress"] > 0)
        for _ in range(100):
            if pool.busy_slots():
                break
            time.sleep(0.05)
        slot = pool.busy_slots()[0]
        killed = pool.worker_ids[slot]
        before = pool.replaced
        ray.kill(pool.actor(slot))  # as an out-of-memory kill would
        job = wait(http_request, server.url, job_id)
        assert job["status"] == "done" and job["result"]["worker"] != killed
        record = json.loads((tmp_path / "jobs" / job_id / "job.json").read_text())
        assert record["attempts"] == 2 and pool.replaced == before + 1
    finally:
        server.close()


def test_batch_on_the_pool_gives_the_local_executors_meshes(pool, tmp_path, cpu_settings, object_image,
                                                            small_request):
    """`orbitmesh batch --ray local` (the module's pool) and the local executor: same seeds, same meshes."""
    import trimesh

    from orbitmesh.batch import run_batch

    folder = tmp_path / "inputs"
    folder.mkdir()
    for i, colour in enumerate([(200, 60, 40), (40, 160, 60), (50, 70, 200), (180, 180, 40)]):
        object_image(128, color=colour).save(folder / f"obj{i}.png")
    settings = cpu_settings(tmp_path)
    borrowed = SimpleNamespace(name=pool.name, workers=pool.workers, run=pool.run, close=lambda: None)
    on_ray = run_batch([folder], tmp_path / "ray", dict(small_request), settings=settings, executor=borrowed)
    local = run_batch([folder], tmp_path / "local", dict(small_request), settings=settings)
    assert on_ray.done == local.done == 4
    record = json.loads((tmp_path / "ray" / "batch.json").read_text())
    assert len({item["worker"] for item in record["items"]}) == 2  # both workers took items
    for name in (f"obj{i}" for i in range(4)):
        a = trimesh.load(tmp_path / "ray" / f"{name}.glb", force="mesh")
        b = trimesh.load(tmp_path / "local" / f"{name}.glb", force="mesh")
        assert len(a.faces) == len(b.faces) and a.vertices.shape == b.vertices.shape
        assert abs(a.vertices - b.vertices).max() < 1e-5


def test_a_second_node_takes_jobs_too(tmp_path, cpu_settings, image, small_request, pool):
    """Two simulated nodes of one CPU each (``ray.cluster_utils.Cluster``): a worker on each, both run jobs."""
    from ray.cluster_utils import Cluster

    from orbitmesh.pipeline.request import GenerateRequest
    from orbitmesh.progress import ProgressTracker

    pool.close()
    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    try:
        executor = RayExecutor.start(cluster.address, workers=2)
        nodes = {w.split(":")[1] for w in executor.worker_ids}
        assert len(nodes) == 2  # one actor per node (each node has one CPU)
        path = tmp_path / "obj.png"
        Image.open(__import__("io").BytesIO(image)).save(path)
        results = []

        def one(seed: int) -> None:
            request = GenerateRequest.from_settings({**small_request, "seed": seed})
            request.image_path = str(path)
            results.append(executor.run(request, cpu_settings(tmp_path), ProgressTracker()))

        threads = [threading.Thread(target=one, args=(seed,)) for seed in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(180)
        assert len(results) == 2 and {r.worker.split(":")[1] for r in results} == nodes
        assert all(r.glb_path.read_bytes()[:4] == b"glTF" for r in results)
        executor.close()
    finally:
        ray.shutdown()
        cluster.shutdown()
