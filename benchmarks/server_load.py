"""Load on ``orbitmesh serve``: job throughput, /health latency under load and with open event streams, memory.

    python benchmarks/server_load.py                            # fake 50 ms jobs: 100 jobs, 4 clients, 50 streams
    python benchmarks/server_load.py --jobs 200 --sse 100 --json
    python benchmarks/server_load.py --runner real --jobs 30 --sse 20   # the real tiny-random pipeline (~2 min)

The server runs as a child process so its memory can be read from /proc/<pid>/status (VmRSS). ``--runner fake``
(default) starts it through benchmarks/fake_runner.py (``make_server`` with a runner that sleeps ``--job-ms`` and
writes a tiny GLB): it measures the HTTP layer and the queue, not the GPU. ``--runner real`` is ``orbitmesh serve
--model tiny-random --device cpu`` with small job settings (seconds per job on a CPU).

Phases: (1) ``--clients`` clients each submit a job (multipart PNG) and wait for it on its event stream, until 10
jobs are done; idle RSS. (2) the same for the remaining jobs while a sampler polls /health every 10 ms: jobs per
minute and /health p50/p99 under load; idle RSS again (after all the jobs: it should not have grown). (3) one job
holds the worker, a second waits behind it and ``--sse`` event streams are opened on that second one; /health
p50/p99 while they are open; then both jobs are cancelled and every stream must end.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
FIRST = 10  # RSS is compared after this many jobs and after all of them
REAL_SETTINGS = {"model": "tiny-random", "mc_resolution": 40, "target_faces": 600, "texture_size": 128}


# ----- the server ---------------------------------------------------------------------------------------------

@dataclass
class Server:
    proc: subprocess.Popen
    host: str
    port: int
    log: Path

    def rss_mb(self) -> float:
        """The server process's resident memory (VmRSS) in MiB."""
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"^VmRSS:\s+(\d+) kB", text, re.M)[1]) / 1024

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_server(runner: str, folder: Path, job_ms: float) -> Server:
    """Start the server on a free port and wait for its "listening on" line (stderr goes to a log file)."""
    log = folder / "server.log"
    if runner == "fake":
        code = f"import sys; sys.path.insert(0, {str(BENCH_DIR)!r}); import fake_runner; sys.exit(fake_runner.serve())"
        cmd = [sys.executable, "-c", code, "--port", "0", "--output-dir", str(folder), "--job-ms", str(job_ms)]
    else:
        cmd = [sys.executable, "-m", "orbitmesh", "serve", "--port", "0", "--quiet", "--model", "tiny-random",
               "--device", "cpu", "--output-dir", str(folder / "jobs"), "--model-dir", str(folder / "models")]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("ORBITMESH_TOKEN", None)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log.open("w"), text=True, env=env)
    deadline = time.monotonic() + 180
    for line in proc.stdout:
        match = re.match(r"orbitmesh serve listening on http://(.+):(\d+)", line)
        if match:
            threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep draining stdout
            return Server(proc, match[1], int(match[2]), log)
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise SystemExit(f"the server did not start: {log.read_text()[-2000:]}")


# ----- HTTP -------------------------------------------------------------------------------------------------------

def call(server: Server, method: str, path: str, body: bytes | None = None,
         headers: dict | None = None) -> tuple[int, dict]:
    conn = http.client.HTTPConnection(server.host, server.port, timeout=120)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, json.loads(data) if data else {}
    finally:
        conn.close()


def health_ms(server: Server) -> float:
    start = time.perf_counter()
    status, body = call(server, "GET", "/health")
    elapsed = (time.perf_counter() - start) * 1000
    if status != 200 or body.get("status") != "ok":
        raise RuntimeError(f"/health answered {status}: {body}")
    return elapsed


def upload_png() -> bytes:
    """A 128x128 object on white (what an add-on would upload, small)."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (128, 128), "white")
    ImageDraw.Draw(img).ellipse((32, 32, 96, 96), fill=(200, 60, 40))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def submit(server: Server, image: bytes, settings: dict) -> str:
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="bench.png"\r\n'
            f"Content-Type: image/png\r\n\r\n").encode() + image + (
        f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="settings"\r\n\r\n{json.dumps(settings)}'
        f"\r\n--{boundary}--\r\n").encode()
    status, data = call(server, "POST", "/jobs", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    if status != 202:
        raise RuntimeError(f"POST /jobs answered {status}: {data}")
    return data["id"]


def wait_events(server: Server, job_id: str) -> str:
    """Follow the job's event stream until it ends; its last status."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=600)
    try:
        conn.request("GET", f"/jobs/{job_id}/events")
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"events for {job_id} answered {resp.status}")
        status = "?"
        for line in resp:
            if line.startswith(b"data: "):
                status = json.loads(line[6:])["status"]
        return status
    finally:
        conn.close()


def wait_idle(server: Server, settle_s: float = 1.0) -> None:
    """Until no job is queued or running, then ``settle_s`` more (memory read at rest)."""
    while True:
        _, health = call(server, "GET", "/health")
        if not health.get("queue_length") and not health.get("busy"):
            break
        time.sleep(0.05)
    time.sleep(settle_s)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


# ----- phases -------------------------------------------------------------------------------------------------

@dataclass
class Load:
    jobs: int
    seconds: float
    statuses: dict[str, int]
    health: list[float] = field(default_factory=list)


def run_jobs(server: Server, n: int, clients: int, image: bytes, settings: dict, seed0: int,
             sample_health: bool) -> Load:
    """``clients`` threads submit-and-wait until ``n`` jobs are done; /health sampled every 10 ms meanwhile."""
    counter = iter(range(n))
    lock = threading.Lock()
    statuses: dict[str, int] = {}
    errors: list[BaseException] = []
    done = threading.Event()
    latencies: list[float] = []

    def client() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            try:
                status = wait_events(server, submit(server, image, {**settings, "seed": seed0 + i}))
            except BaseException as exc:  # reported after the run, not lost in a thread
                errors.append(exc)
                return
            with lock:
                statuses[status] = statuses.get(status, 0) + 1

    def sampler() -> None:
        while not done.is_set():
            latencies.append(health_ms(server))
            time.sleep(0.01)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    sampling = threading.Thread(target=sampler) if sample_health else None
    start = time.perf_counter()
    if sampling:
        sampling.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - start
    done.set()
    if sampling:
        sampling.join()
    if errors:
        raise errors[0]
    return Load(n, seconds, statuses, latencies)


def hold_streams(server: Server, count: int, image: bytes, settings: dict, samples: int,
                 runner: str) -> dict:
    """Open ``count`` event streams on a queued job while another holds the worker; /health latency meanwhile."""
    from fake_runner import HOLD_SEED

    holder = submit(server, image, {**settings, "seed": HOLD_SEED} if runner == "fake" else settings)
    waiting = submit(server, image, {**settings, "seed": 1})
    opened = threading.Semaphore(0)
    results: list[tuple[int, bool]] = []  # (status, ended with a final job object)
    lock = threading.Lock()

    def stream() -> None:
        conn = http.client.HTTPConnection(server.host, server.port, timeout=300)
        status, final = 0, False
        try:
            conn.request("GET", f"/jobs/{waiting}/events")
            resp = conn.getresponse()
            status = resp.status
            opened.release()
            if status == 200:
                for line in resp:
                    if line.startswith(b"data: "):
                        final = json.loads(line[6:])["status"] in ("done", "failed", "cancelled")
        except OSError:
            opened.release()
        finally:
            conn.close()
            with lock:
                results.append((status, final))

    threads = [threading.Thread(target=stream, daemon=True) for _ in range(count)]
    for t in threads:
        t.start()
    for _ in threads:
        opened.acquire(timeout=60)
    time.sleep(0.5)  # let every stream settle into waiting
    with lock:
        closed_early = len(results)
    latencies = [health_ms(server) for _ in range(samples)]
    with lock:
        still_open = count - len(results)
    call(server, "POST", f"/jobs/{waiting}/cancel")
    call(server, "POST", f"/jobs/{holder}/cancel")
    for t in threads:
        t.join(60)
    ok = sum(1 for status, final in results if status == 200 and final)
    return {"streams": count, "closed_before_sampling": closed_early, "open_while_sampling": still_open,
            "ended_cleanly": ok, "health": latencies}


# ----- main -------------------------------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="orbitmesh-load-"))
    image = upload_png()
    settings = dict(REAL_SETTINGS)
    server = start_server(args.runner, folder, args.job_ms)
    try:
        rss_start = server.rss_mb()  # before any request (the first /health imports torch for the device probe)
        first_health = health_ms(server)  # cold: imports and the first device probe, kept out of the idle numbers
        idle = [health_ms(server) for _ in range(args.health_samples)]
        first = run_jobs(server, min(FIRST, args.jobs), args.clients, image, settings, 0, sample_health=False)
        wait_idle(server)
        rss_first = server.rss_mb()
        rest = args.jobs - first.jobs
        load = run_jobs(server, rest, args.clients, image, settings, first.jobs, sample_health=True) if rest else None
        wait_idle(server)
        rss_all = server.rss_mb()
        sse = hold_streams(server, args.sse, image, settings, args.health_samples, args.runner) if args.sse else None
        wait_idle(server)
        rss_end = server.rss_mb()
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
    statuses: dict[str, int] = dict(first.statuses)
    for status, n in (load.statuses if load else {}).items():
        statuses[status] = statuses.get(status, 0) + n
    measured = load or first
    return {
        "runner": args.runner, "job_ms": args.job_ms if args.runner == "fake" else None, "jobs": args.jobs,
        "clients": args.clients, "job_statuses": statuses,
        "jobs_per_min": round(measured.jobs / measured.seconds * 60, 1),
        "jobs_per_min_over": measured.jobs,
        "health_first_ms": round(first_health, 1),
        "health_idle_ms": _summary(idle),
        "health_load_ms": _summary(load.health) if load else None,
        "sse": None if sse is None else {**{k: v for k, v in sse.items() if k != "health"},
                                         "health_ms": _summary(sse["health"])},
        "rss_mb": {"start": round(rss_start, 1), f"after_{first.jobs}": round(rss_first, 1),
                   f"after_{args.jobs}": round(rss_all, 1), "after_streams": round(rss_end, 1),
                   "growth": round(rss_all - rss_first, 1)},
        "log": str(server.log) if args.keep else None,
    }


def _summary(values: list[float]) -> dict:
    return {"n": len(values), "p50": round(percentile(values, 50), 2), "p99": round(percentile(values, 99), 2),
            "mean": round(statistics.fmean(values), 2) if values else None}


def format_table(r: dict) -> str:
    runner = f"fake ({r['job_ms']:g} ms jobs)" if r["runner"] == "fake" else "real (tiny-random, CPU)"
    rows = [("runner", runner),
            ("jobs (statuses)", f"{r['jobs']} {r['job_statuses']}"),
            (f"jobs/min, {r['clients']} clients ({r['jobs_per_min_over']} jobs)", f"{r['jobs_per_min']:.1f}")]
    rows.append(("first /health ms (cold)", f"{r['health_first_ms']:.1f}"))
    for label, key in (("idle", "health_idle_ms"), ("under load", "health_load_ms")):
        if r[key]:
            h = r[key]
            rows.append((f"/health p50 / p99 ms, {label} (n={h['n']})", f"{h['p50']:.2f} / {h['p99']:.2f}"))
    if r["sse"]:
        s = r["sse"]
        rows.append((f"/health p50 / p99 ms, {s['streams']} SSE open (n={s['health_ms']['n']})",
                     f"{s['health_ms']['p50']:.2f} / {s['health_ms']['p99']:.2f}"))
        rows.append(("SSE open while sampling / ended cleanly", f"{s['open_while_sampling']} / {s['ended_cleanly']}"))
    for key, value in r["rss_mb"].items():
        rows.append((f"RSS MiB {key.replace('_', ' ')}", f"{value:.1f}"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runner", choices=("fake", "real"), default="fake",
                        help="fake: a 'job' sleeps --job-ms (measures the server); real: the tiny-random pipeline")
    parser.add_argument("--jobs", type=int, default=100, help="jobs in all (default 100; RSS compared after 10)")
    parser.add_argument("--clients", type=int, default=4, help="concurrent submit-and-wait clients (default 4)")
    parser.add_argument("--job-ms", type=float, default=50.0, help="fake runner: milliseconds per job (default 50)")
    parser.add_argument("--sse", type=int, default=50, help="event streams held open in phase 3 (default 50; 0: skip)")
    parser.add_argument("--health-samples", type=int, default=200,
                        help="/health requests measured at idle and with the streams open (default 200)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary jobs folder and server log")
    parser.add_argument("--json", action="store_true", help="print the result as JSON instead of a table")
    args = parser.parse_args()
    if args.jobs < 1 or args.clients < 1:
        parser.error("--jobs and --clients must be at least 1")
    sys.path.insert(0, str(BENCH_DIR))  # fake_runner (HOLD_SEED)
    result = run(args)
    print(json.dumps(result, indent=2) if args.json else format_table(result))


if __name__ == "__main__":
    main()
