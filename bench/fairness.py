"""What one client's load costs everyone else: GET /health latency while the largest JSON
body the API accepts is posted over and over, and while 100 event streams are open (unread,
as in issue #16), with the API process's CPU in the second case. Targets: /health p99
< 10 ms, API CPU < 5 % of a core with the streams open.

Starts the real service (``spec2fractal serve``, API keys required, its embedded worker
rendering fractal jobs) on a loopback port, with the code of this checkout or of --code DIR
(e.g. an older checkout, to compare). The largest accepted body is found by asking the
server (413 means too large), so the script measures whatever limits and whatever JSON
parsing the code under test has. Prints a table; not a test.

Run: python bench/fairness.py [--seconds 10] [--streams 100] [--keys 5] [--code DIR]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from common import free_port, percentile

ROOT = Path(__file__).resolve().parents[1]
HEALTH_TARGET_MS = 10.0
CPU_TARGET = 5.0  # per cent of one core
PROBE_GAP = 0.02  # seconds between /health probes
JOB = {"content": "a fern in the mist", "width": 1024, "height": 1024, "steps": 30, "n": 2}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (no psutil needed)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def cpu_percent(pid: int, seconds: float) -> float:
    before, started = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return 100 * (cpu_seconds(pid) - before) / (time.monotonic() - started)


@dataclass
class Row:
    case: str
    probes: list[float] = field(default_factory=list)
    cpu: float | None = None
    target: str = ""
    note: str = ""

    def passed(self) -> bool | None:
        if not self.target:
            return None
        ok = not self.probes or percentile(self.probes, 99) * 1000 < HEALTH_TARGET_MS
        return ok and (self.cpu is None or self.cpu < CPU_TARGET)


def probe_health(base: str, seconds: float) -> list[float]:
    times = []
    deadline = time.monotonic() + seconds
    with httpx.Client(base_url=base, timeout=30) as client:
        while time.monotonic() < deadline:
            start = time.perf_counter()
            response = client.get("/health")
            times.append(time.perf_counter() - start)
            if response.status_code != 200:
                raise RuntimeError(f"/health answered {response.status_code}")
            time.sleep(PROBE_GAP)
    return times


@contextlib.contextmanager
def meanwhile(work: Callable[[threading.Event], None], threads: int = 1) -> Iterator[None]:
    stop = threading.Event()
    workers = [threading.Thread(target=work, args=(stop,), daemon=True) for _ in range(threads)]
    for worker in workers:
        worker.start()
    try:
        yield
    finally:
        stop.set()
        for worker in workers:
            worker.join(120)


def token_body(size: int) -> bytes:
    """A JSON array of ``size`` bytes of one-digit numbers: the most tokens a body can hold,
    the slowest to parse."""
    count = max(1, (size - 1) // 2)
    return b"[" + b"0," * (count - 1) + b"0]"


def string_body(size: int) -> bytes:
    """One JSON string of ``size`` bytes in all: fast to parse, the most bytes to read."""
    prefix, suffix = b'{"content": "', b'"}'
    return prefix + b"a" * max(0, size - len(prefix) - len(suffix)) + suffix


def image_body(size: int, field: str = "image") -> bytes:
    """One image field of ``size`` bytes in all, as a data URL of random bytes: decoded from
    base64 like any image, then refused as not an image (no render is queued). ``field``
    ``style_image``: the same as a style reference."""
    head = b'{"input_type": "image", "image": ' if field == "image" else \
        b'{"content": "a fern", "width": 64, "height": 64, "' + field.encode() + b'": '
    prefix, suffix = head + b'"data:image/png;base64,', b'"}'
    room = max(4, (size - len(prefix) - len(suffix)) // 4 * 4)
    return prefix + base64.b64encode(os.urandom(room // 4 * 3)) + suffix


def largest_accepted(base: str, key: dict[str, str], start: int) -> int:
    """The largest body size the server reads (not 413), to within about 3 %."""
    def accepted(size: int) -> bool:
        response = httpx.post(base + "/generate", content=token_body(size), timeout=300,
                              headers={**key, "Content-Type": "application/json"})
        return response.status_code != 413

    if accepted(start):
        return start
    low, high = 0, start  # accepted below low, refused at high
    while high - low > max(1024, high // 32):
        middle = (low + high) // 2
        low, high = (middle, high) if accepted(middle) else (low, middle)
    return low


# The poster runs in its own process: sending 67 MB from a thread of this one would take
# the GIL from the /health prober and count the client's stalls as the server's.
POSTER = """
import sys, httpx
base, secret, path = sys.argv[1:]
body = open(path, "rb").read()
with httpx.Client(base_url=base, timeout=300, headers={
        "Authorization": "Bearer " + secret, "Content-Type": "application/json"}) as client:
    while True:
        print(client.post("/generate", content=body).status_code, flush=True)
"""


def post_forever(base: str, secret: str, body_file: Path, statuses: list[int]
                 ) -> Callable[[threading.Event], None]:
    def work(stop: threading.Event) -> None:
        poster = subprocess.Popen([sys.executable, "-c", POSTER, base, secret, str(body_file)],
                                  stdout=subprocess.PIPE, text=True)
        stop.wait()
        poster.terminate()
        out, _ = poster.communicate()
        statuses.extend(int(line) for line in out.split())
    return work


def open_unread_stream(port: int, job_id: str, secret: str) -> socket.socket:
    """An event stream whose client reads its response's head and then nothing."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.sendall(f"GET /jobs/{job_id}/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                 f"Authorization: Bearer {secret}\r\nAccept: text/event-stream\r\n\r\n"
                 .encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise RuntimeError("the server closed an event stream")
        head += chunk
    if not head.startswith(b"HTTP/1.1 200"):
        sock.close()
        raise RuntimeError(f"event stream refused: {head.splitlines()[0].decode()}")
    return sock


def make_keys(env: dict[str, str], code: Path, count: int) -> list[str]:
    secrets = []
    for number in range(count):
        # cwd: `python -m` looks in the working folder first; the keys must be made by the
        # code under test, which migrates the database to its own schema.
        made = subprocess.run([sys.executable, "-m", "spec2fractal.cli", "keys", "create",
                               "--name", f"bench-{number}"], env=env, cwd=code,
                              capture_output=True, text=True, timeout=120, check=True)
        secrets.append(made.stdout.strip().splitlines()[-1])
    return secrets


def wait_until_ready(base: str, process: subprocess.Popen[bytes], timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(base + "/ready", timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError("the server did not become ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="length of each measurement window")
    parser.add_argument("--streams", type=int, default=100)
    parser.add_argument("--keys", type=int, default=5,
                        help="the streams are shared among this many keys (each key may hold "
                             "max_streams_per_key)")
    parser.add_argument("--jobs", type=int, default=12, help="renders queued for case (b)")
    parser.add_argument("--code", type=Path, default=ROOT,
                        help="the checkout whose service to measure")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="s2f-fairness-"))
    code = args.code.resolve()
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("SPEC2FRACTAL_")}
    env.update({"SPEC2FRACTAL_DATA_DIR": str(scratch / "data"), "SPEC2FRACTAL_AUTH": "required",
                "PYTHONPATH": str(code), "HF_HUB_OFFLINE": "1"})
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    rows: list[Row] = []
    server = None
    try:
        secrets = make_keys(env, code, args.keys)
        keys = [{"Authorization": f"Bearer {secret}"} for secret in secrets]
        with (scratch / "server.log").open("wb") as log:
            server = subprocess.Popen(
                [sys.executable, "-c", f"from api.cli import serve; serve(port={port})"],
                env=env, cwd=code, stdout=log, stderr=subprocess.STDOUT)
        wait_until_ready(base, server)
        probe_health(base, 1.0)  # warm
        rows.append(Row("GET /health, idle", probe_health(base, args.seconds)))

        # (a) the largest JSON body, posted back to back, while /health is probed.
        limit = int(subprocess.run(
            [sys.executable, "-c", "from api.limits import MAX_BODY_BYTES as m; print(m)"],
            env=env, cwd=code, capture_output=True, text=True, check=True).stdout)
        size = largest_accepted(base, keys[0], limit - 4096)
        for shape, body in (("many small tokens", token_body(size)),
                            ("one long string", string_body(size)),
                            ("one data-URL image", image_body(size)),
                            ("one data-URL style reference", image_body(size, "style_image"))):
            statuses: list[int] = []
            body_file = scratch / "body.json"
            body_file.write_bytes(body)
            with meanwhile(post_forever(base, secrets[0], body_file, statuses)):
                time.sleep(1.5)  # the poster starts and sends its first body
                probes = probe_health(base, args.seconds)
            answered = ", ".join(f"{status} x{statuses.count(status)}"
                                 for status in sorted(set(statuses)))
            rows.append(Row(f"GET /health, {size / 2**20:.1f} MiB JSON bodies: {shape}", probes,
                            target=f"p99 < {HEALTH_TARGET_MS:g} ms",
                            note=f"bodies answered {answered}"))

        # (b) renders running, then the same with the streams open on their jobs.
        jobs: list[tuple[int, str]] = []
        with httpx.Client(base_url=base, timeout=60) as client:
            for number in range(args.jobs):
                owner = number % len(keys)
                made = client.post("/generate", json={**JOB, "seed": number},
                                   headers={**keys[owner], "Prefer": "respond-async"})
                if made.status_code != 202:
                    raise RuntimeError(f"a job was refused: {made.status_code} {made.text}")
                jobs.append((owner, made.json()["id"]))
            while client.get(f"/jobs/{jobs[0][1]}", headers=keys[0]).json()["status"] \
                    == "queued":
                time.sleep(0.1)
        cpu = cpu_percent(server.pid, args.seconds)
        rows.append(Row("GET /health while rendering, no streams",
                        probe_health(base, args.seconds), cpu=cpu))
        streams: list[socket.socket] = []
        try:
            for number in range(args.streams):
                owner = number % len(keys)
                mine = [job_id for key, job_id in jobs if key == owner]
                for attempt in range(50):  # past the per-key rate limit: wait and retry
                    try:
                        streams.append(open_unread_stream(
                            port, mine[number // len(keys) % len(mine)], secrets[owner]))
                        break
                    except RuntimeError as exc:
                        if "429" not in str(exc) or attempt == 49:
                            raise
                        time.sleep(0.2)
            time.sleep(1.0)
            cpu = cpu_percent(server.pid, args.seconds)
            probes = probe_health(base, args.seconds)
            rows.append(Row(f"GET /health, {len(streams)} open unread event streams", probes,
                            cpu=cpu, target=f"p99 < {HEALTH_TARGET_MS:g} ms, "
                                            f"CPU < {CPU_TARGET:g} %",
                            note=f"on {len(jobs)} jobs of {len(keys)} keys, rendering"))
        finally:
            for sock in streams:
                sock.close()
            with httpx.Client(base_url=base, timeout=60) as client:
                for owner, job_id in jobs:
                    client.post(f"/jobs/{job_id}/cancel", headers=keys[owner])
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
        log_tail = (scratch / "server.log").read_text(errors="replace")[-2000:] \
            if (scratch / "server.log").exists() else ""
        shutil.rmtree(scratch, ignore_errors=True)
        if not rows:
            print(log_tail, file=sys.stderr)

    print(f"code: {code}; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}; windows of {args.seconds:g} s, /health every "
          f"{PROBE_GAP * 1000:g} ms")
    print(f"{'case':<58} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} {'API CPU':>8}  target")
    for row in rows:
        cells = (f"{statistics.median(row.probes) * 1000:>7.1f} "
                 f"{percentile(row.probes, 99) * 1000:>7.1f} {max(row.probes) * 1000:>7.1f}"
                 if row.probes else f"{'':>7} {'':>7} {'':>7}")
        cpu = f"{row.cpu:>7.1f}%" if row.cpu is not None else f"{'':>8}"
        verdict = {None: "", True: "  ok", False: "  MISSED"}[row.passed()]
        print(f"{row.case:<58} {cells} {cpu}  {row.target}{verdict}")
        if row.note:
            print(f"{'':<4}{row.note}")


if __name__ == "__main__":
    main()
