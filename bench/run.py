"""papo side by side with its peers, in one run: ``python -m bench.run [--quick]``.

Every server runs pinned to core 0 and the load generator (Node) to core 1; each
server, and the history store of each papo row that has one, is started and stopped by
PID for each scenario, so no state carries over. The history store runs on the
generator's core under SCHED_IDLE by default: it stands in for a database on a machine
of its own and is meant to take only CPU time neither papo nor the generator wants (it
still costs the generator some waiting for its core: the S4 table's "loadgen waited
ms" shows how much). The services' files (the store's journal, PostgreSQL's and Redis's
data) live in memory (``/dev/shm``) by default, for the same reason: their disks would be
on machines of their own, and on a virtual machine every disk interrupt lands on one
core (here the generator's); ``--files disk`` keeps them on this machine's disk.
The kernel's autogroup scheduling is turned off for the run (and back on after): with it
on, SCHED_IDLE would count only inside each service's own session (see
``per_task_scheduling``). Prints one Markdown table per scenario with ratios to the
ceiling and to Node socket.io, and writes the raw results as JSON under
``bench/results/``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from papo.server.config import Settings
from papo.server.embedded import EmbeddedServices
from papo.server.embedded.process import free_port
from papo.server.prepare import prepare_services

ROOT = Path(__file__).resolve().parents[1]
LOADGEN = ROOT / "bench" / "loadgen"
SERVER_CORE, LOADGEN_CORE = "0", "1"
AUTOGROUP = Path("/proc/sys/kernel/sched_autogroup_enabled")
JWT_SECRET = "bench-secret-" + "x" * 40

FULL: dict[str, dict[str, Any]] = {
    "s1": {"subscribers": 1000, "warmup": 2, "seconds": 8, "window": 20, "repeats": 3},
    "s2": {"subscribers": 1000, "rate": 20, "seconds": 15, "repeats": 3},
    "s3": {"connections": 5000, "hold": 3},
    "s4": {"clients": 1000, "seconds": 15, "repeats": 5},
    "s5": {"clients": 1000, "rate": 20},
}
QUICK: dict[str, dict[str, Any]] = {
    "s1": {"subscribers": 50, "warmup": 0.5, "seconds": 1.5, "window": 10, "repeats": 1},
    "s2": {"subscribers": 50, "rate": 20, "seconds": 2},
    "s3": {"connections": 200, "hold": 1},
    "s4": {"clients": 50, "seconds": 2},
    "s5": {"clients": 50, "rate": 20},
}


def resized(base: dict[str, dict[str, Any]], changes: list[str]) -> dict[str, dict[str, Any]]:
    """``base`` with ``scenario.key=number`` changes applied (``--size s4.seconds=40``).

    Only keys a scenario already has can change, so a typo fails loudly instead of
    running the default size under a name that looks changed.
    """
    sizes = {scenario: dict(values) for scenario, values in base.items()}
    for change in changes:
        name, _, value = change.partition("=")
        scenario, _, key = name.partition(".")
        if scenario not in sizes or key not in sizes[scenario]:
            known = ", ".join(f"{s}.{k}" for s in sizes for k in sizes[s])
            raise ValueError(f"{change!r}: no size {name!r}; sizes: {known}")
        try:
            number = float(value)
        except ValueError:
            raise ValueError(f"{change!r}: {value!r} is not a number") from None
        if number <= 0:
            raise ValueError(f"{change!r}: sizes are positive")
        sizes[scenario][key] = int(number) if number.is_integer() else number
    return sizes


# Scenarios repeated for noise report the run with the median of this figure.
MEDIAN_OF = {"s1": "deliveries_per_s", "s2": "p99_ms", "s4": "p99_ms"}


@dataclass(frozen=True)
class Placement:
    """Where a backing service runs: a core, and whether only when that core is idle."""

    core: str
    idle: bool

    def __str__(self) -> str:
        return f"core {self.core} ({'SCHED_IDLE' if self.idle else 'normal priority'})"


@dataclass
class Row:
    name: str
    protocol: str  # papo, bench or sio
    path: str = ""
    repeat: bool = True  # run repeated scenarios more than once
    key: str = ""  # a short name for --rows (the names hold commas, which --rows splits on)
    results: dict[str, Any] = field(default_factory=dict)


ROWS = [
    Row("ceiling (websockets broadcast)", "bench", key="ceiling"),
    Row("papo (memory broker, auth, durable history)", "papo", "/ws", key="papo-durable"),
    Row("papo (Redis broker, auth, durable history)", "papo", "/ws", key="papo-redis"),
    Row("papo (memory broker, auth, in-memory history)", "papo", "/ws", key="papo-in-memory"),
    # Tens to thousands of times the ceiling's latency: one run of each scenario tells
    # as much, and keeps the whole run under 25 minutes.
    Row("python-socketio (uvicorn)", "sio", repeat=False, key="socketio"),
    Row("Django Channels (uvicorn)", "bench", repeat=False, key="channels"),
    Row("Node socket.io", "sio", key="node"),
]


def _selects(wanted: str, row: Row) -> bool:
    """``--rows`` takes a row's key or the start of its name."""
    return wanted == row.key or row.name.startswith(wanted)


@contextlib.contextmanager
def per_task_scheduling() -> Iterator[str]:
    """Turn the kernel's autogroup scheduling off for the run, and back on after.

    With autogroup on, the kernel shares a core between sessions first and between the
    tasks of a session second; papo's launcher starts each backing service in a session
    of its own. SCHED_IDLE then ranks the history store only against its own threads,
    and its session competes with the generator's as an equal: measured in S4, the
    "idle" store kept the generator ready to run and waiting for 5.1 s of its 15 s
    (0.5 s with autogroup off), and the durable row's p99 carried it. Yields what the
    machine line says about it."""
    try:
        before = AUTOGROUP.read_text().strip()
    except OSError:
        yield "no autogroup scheduling"
        return
    if before == "0":
        yield "autogroup scheduling off"
        return
    try:
        AUTOGROUP.write_text("0")
    except OSError:
        # Not root: the run goes on, and the machine line says SCHED_IDLE is not idle.
        yield "autogroup scheduling ON (SCHED_IDLE services compete as equals)"
        return
    try:
        yield "autogroup scheduling off for the run"
    finally:
        AUTOGROUP.write_text(before)


def cpu_seconds(pid: int) -> float:
    """User and system CPU of process ``pid`` so far, its ended threads included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _wait_port(port: int, process: subprocess.Popen[bytes], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"server did not listen on {port}")


def _history_writes(port: int) -> dict[str, float]:
    """papo's durable history writes in this scenario, from its own /metrics: how many,
    their mean size and time, and the bucket bounds the 99th percentile and the slowest
    write fall under (with a shared broker, fan-out waits for them)."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    total = count = messages = 0.0
    buckets: list[tuple[float, float]] = []
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if name == "papo_history_write_seconds_sum":
            total = float(value)
        elif name == "papo_history_write_seconds_count":
            count = float(value)
        elif name == "papo_history_write_batch_size_sum":
            messages = float(value)
        elif name.startswith('papo_history_write_seconds_bucket{le="'):
            bound = name.split('"')[1]
            buckets.append((float("inf") if bound == "+Inf" else float(bound), float(value)))
    if not count:
        return {}
    ordered = sorted(buckets)
    p99 = next(bound for bound, seen in ordered if seen >= 0.99 * count)
    slowest = next(bound for bound, seen in ordered if seen >= count)
    return {
        "history_writes": int(count),
        "history_batch_mean": round(messages / count, 1),
        "history_write_ms": round(1000 * total / count, 2),
        "history_write_p99_ms": round(1000 * p99, 1),
        "history_write_max_ms": round(1000 * slowest, 1),
    }


class Bench:
    def __init__(
        self,
        sizes: dict[str, dict[str, Any]],
        data_dir: Path,
        services: Placement,
        store: Placement,
    ) -> None:
        self.sizes = sizes
        self.services = services
        self.store = store
        self.data_dir = data_dir
        self.papo_env: dict[str, str] = {}
        self.redis_url = ""

    def start_services(self) -> EmbeddedServices:
        engines = EmbeddedServices(self.data_dir, ["database", "redis"], durable=True)
        urls = engines.start()
        self.redis_url = urls["redis"]
        self.papo_env = {
            "PAPO_DATABASE_URL": urls["database"],
            "PAPO_JWT_SECRET": JWT_SECRET,
            "PAPO_ACCESS_TOKEN_SECONDS": "7200",
            "PAPO_LOG_LEVEL": "WARNING",
            "PAPO_WS_FRAMES_PER_SECOND": "1000000",
            "PAPO_WS_FRAME_BURST": "1000000",
            "PAPO_RATE_LOGIN_IP": "1000000/60",
            "PAPO_RATE_REGISTER_IP": "1000000/60",
            "PAPO_WS_OUTBOX_FRAMES": "4096",
        }
        asyncio.run(prepare_services(Settings.from_env(self.papo_env)))
        self._pin(engines, self.services)
        return engines

    @staticmethod
    def _pin(engines: EmbeddedServices, placement: Placement) -> None:
        for pid in engines.pids:
            subprocess.run(
                ["taskset", "-a", "-p", "-c", placement.core, str(pid)],
                capture_output=True,
                check=False,
            )
            if placement.idle:
                # SCHED_IDLE: the service runs only when the core has nothing else to run,
                # and a waking server preempts it at once. Threads it starts later
                # inherit the policy from the thread that starts them.
                for task in Path(f"/proc/{pid}/task").iterdir():
                    with contextlib.suppress(ProcessLookupError):
                        os.sched_setscheduler(int(task.name), os.SCHED_IDLE, os.sched_param(0))

    @contextlib.contextmanager
    def history_store(self, row: Row) -> Iterator[tuple[dict[str, str], int | None]]:
        """A fresh, durable history store for one scenario of a papo row that has one.

        What one row or scenario wrote (S1 alone writes tens of thousands of messages)
        must not slow the next one's writes. The in-memory history row gets none: it
        keeps papo's own hot path apart from the store's."""
        if not row.name.startswith("papo") or "in-memory history" in row.name:
            yield {}, None
            return
        data_dir = Path(tempfile.mkdtemp(prefix="store-", dir=self.data_dir))
        try:
            with EmbeddedServices(data_dir, ["mongo"], durable=True) as store:
                self._pin(store, self.store)
                yield {"PAPO_MONGO_URL": store.urls["mongo"]}, store.pids[0]
        finally:
            shutil.rmtree(data_dir, ignore_errors=True)

    def command(self, row: Row, port: int) -> list[str]:
        python = sys.executable
        if row.name.startswith("ceiling"):
            return [python, "-m", "bench.servers.ceiling", str(port)]
        if row.name.startswith("papo"):
            return [python, "-m", "papo.server.cli", "serve"]
        if row.name.startswith("python-socketio"):
            return [python, "-m", "bench.servers.sio_server", str(port)]
        if row.name.startswith("Django"):
            return [python, "-m", "bench.servers.channels_server", str(port)]
        return ["node", str(LOADGEN / "sio_server.mjs"), str(port)]

    @contextlib.contextmanager
    def server(
        self, row: Row, store: dict[str, str]
    ) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
        port = free_port()
        env = {**os.environ, "PAPO_PORT": str(port), **self.papo_env, **store}
        if "Redis broker" in row.name:
            env.update(PAPO_BROKER="redis", PAPO_REDIS_URL=self.redis_url)
        else:
            env.update(PAPO_BROKER="memory")
            env.pop("PAPO_REDIS_URL", None)
        process = subprocess.Popen(
            ["taskset", "-c", SERVER_CORE, *self.command(row, port)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            _wait_port(port, process)
            yield process, port
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)

    def token(self, port: int) -> str:
        base = f"http://127.0.0.1:{port}"
        email = f"bench-{time.time_ns()}@example.com"
        body = {"email": email, "password": "bench password 1", "display_name": "Bench"}
        httpx.post(f"{base}/api/auth/register", json=body, timeout=30).raise_for_status()
        credentials = {"email": email, "password": body["password"]}
        login = httpx.post(f"{base}/api/auth/login", json=credentials, timeout=30)
        login.raise_for_status()
        token: str = login.json()["access_token"]
        return token

    def run_scenario(self, row: Row, scenario: str) -> dict[str, Any]:
        with (
            self.history_store(row) as (store, store_pid),
            self.server(row, store) as (process, port),
        ):
            time.sleep(0.3)
            scheme = "ws" if row.protocol in ("papo", "bench") else "http"
            args: dict[str, Any] = {
                "scenario": scenario,
                "protocol": row.protocol,
                "url": f"{scheme}://127.0.0.1:{port}{row.path}",
                **self.sizes[scenario],
            }
            if row.protocol == "papo":
                args["token"] = self.token(port)
            baseline_rss = _rss_kib(process.pid)
            cpu_before, wall_before = cpu_seconds(process.pid), time.monotonic()
            store_before = cpu_seconds(store_pid) if store_pid else 0.0
            loadgen = subprocess.Popen(
                [
                    "taskset",
                    "-c",
                    LOADGEN_CORE,
                    "node",
                    str(LOADGEN / "loadgen.mjs"),
                    json.dumps(args),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            result: dict[str, Any] = {}
            assert loadgen.stdout is not None
            for line in loadgen.stdout:
                message = json.loads(line)
                if message.get("phase") == "hold":
                    result["rss_per_conn_kib"] = round(
                        (_rss_kib(process.pid) - baseline_rss) / message["connections"], 2
                    )
                elif message.get("phase") == "result":
                    result.update({k: v for k, v in message.items() if k != "phase"})
            code = loadgen.wait(600)
            if code != 0:
                assert loadgen.stderr is not None
                raise RuntimeError(
                    f"loadgen failed for {row.name} {scenario}: {loadgen.stderr.read()[-2000:]}"
                )
            wall = time.monotonic() - wall_before
            result["server_cpu_pct"] = round(100 * (cpu_seconds(process.pid) - cpu_before) / wall)
            if store_pid:
                store_cpu = cpu_seconds(store_pid) - store_before
                result["store_cpu_pct"] = round(100 * store_cpu / wall)
            if row.protocol == "papo":
                result.update(_history_writes(port))
            return result

    def _interleaved_runs(self, rows: list[Row], scenario: str) -> dict[str, list[dict[str, Any]]]:
        """Each row's repeats of ``scenario``, taken in turns: every row's first run, then
        every row's second, and so on.

        This machine's own stops come and go over minutes; one row's runs taken back to
        back can all land in a quiet (or a noisy) spell the next row's miss, and the
        ratios between rows are the figures that count."""
        wanted = {
            row.name: self.sizes[scenario].get("repeats", 1) if row.repeat else 1 for row in rows
        }
        runs: dict[str, list[dict[str, Any]]] = {row.name: [] for row in rows}
        for turn in range(max(wanted.values(), default=0)):
            for row in rows:
                if turn < wanted[row.name]:
                    result = self.run_scenario(row, scenario)
                    runs[row.name].append(result)
                    headline = MEDIAN_OF.get(scenario, "")
                    figure = f"{headline} {result.get(headline, '-')}, " if headline else ""
                    print(
                        f"    {scenario} {row.key or row.name} run {turn + 1}: {figure}"
                        f"server CPU {result.get('server_cpu_pct', '-')} %",
                        file=sys.stderr,
                        flush=True,
                    )
        return runs

    def run(self, rows: list[Row], scenarios: list[str]) -> None:
        for scenario in scenarios:
            runs_of = self._interleaved_runs(rows, scenario)
            for row in rows:
                runs = runs_of[row.name]
                headline = MEDIAN_OF.get(scenario)
                if headline and len(runs) > 1 and all(headline in r for r in runs):
                    # The run with the median headline figure, whole, so its columns agree.
                    runs.sort(key=lambda r: r[headline])
                    median = dict(runs[len(runs) // 2])
                    median["runs"] = [r[headline] for r in runs]
                    row.results[scenario] = median
                else:
                    row.results[scenario] = runs[0]
                print(
                    f"  {scenario} {row.name}: {row.results[scenario]}", file=sys.stderr, flush=True
                )


METRICS: dict[str, list[tuple[str, str, bool | None]]] = {
    "s1": [
        ("deliveries_per_s", "deliveries/s", True),
        ("server_cpu_pct", "server CPU %", None),
        ("loadgen_cpu", "loadgen CPU %", None),
    ],
    "s2": [
        ("p50_ms", "p50 ms", None),
        ("p99_ms", "p99 ms", False),
        ("max_ms", "max ms", None),
        ("first_recipient_p50_ms", "first recipient p50 ms", None),
        ("last_recipient_p50_ms", "last recipient p50 ms", None),
        ("last_recipient_p90_ms", "last recipient p90 ms", None),
        ("delivered_pct", "delivered %", None),
        ("server_cpu_pct", "server CPU %", None),
        ("store_cpu_pct", "store CPU %", None),
        ("history_write_ms", "history write ms (mean)", None),
        ("history_write_p99_ms", "history write p99 ≤ ms", None),
        ("loadgen_late_p99_ms", "loadgen late p99 ms", None),
    ],
    "s3": [("rss_per_conn_kib", "KiB/conn", False), ("connects_per_s", "connects/s", True)],
    "s4": [
        ("delivered_pct", "delivered %", None),
        ("p50_ms", "p50 ms", None),
        ("p90_ms", "p90 ms", None),
        ("p99_ms", "p99 ms", False),
        ("server_cpu_pct", "server CPU %", None),
        ("store_cpu_pct", "store CPU %", None),
        ("history_write_ms", "history write ms (mean)", None),
        ("history_write_p99_ms", "history write p99 ≤ ms", None),
        ("loadgen_late_p99_ms", "loadgen late p99 ms", None),
        ("loadgen_waited_ms", "loadgen waited ms", None),
        ("loadgen_gc_ms", "loadgen GC ms", None),
        ("loadgen_cpu", "loadgen CPU %", None),
    ],
    "s5": [
        ("resume_seconds", "resume s", None),
        ("missed", "missed", None),
        ("duplicated", "duplicated", None),
    ],
}
TITLES = {
    "s1": "S1 fan-out throughput",
    "s2": "S2 fan-out latency",
    "s3": "S3 idle connections",
    "s4": "S4 chat rooms",
    "s5": "S5 resume storm",
}


def _ratio(value: Any, reference: Any) -> str:
    if (
        not isinstance(value, int | float)
        or not isinstance(reference, int | float)
        or not reference
    ):
        return "-"
    return f"{value / reference:.2f}x"


def render(rows: list[Row], scenarios: list[str]) -> str:
    out = []
    ceiling, node = rows[0], rows[-1]
    for scenario in scenarios:
        metrics = METRICS[scenario]
        headline = next((m for m in metrics if m[2] is not None), None)
        head = ["server", *(label for _, label, _ in metrics)]
        if headline:
            head += [f"vs ceiling ({headline[1]})", f"vs Node ({headline[1]})"]
        out += [
            f"### {TITLES[scenario]}",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
        ]
        for row in rows:
            result = row.results.get(scenario, {})
            cells = [row.name] + [str(result.get(key, "-")) for key, _, _ in metrics]
            if headline:
                key = headline[0]
                cells += [
                    _ratio(result.get(key), ceiling.results.get(scenario, {}).get(key)),
                    _ratio(result.get(key), node.results.get(scenario, {}).get(key)),
                ]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def files_dir(where: str) -> str | None:
    """The directory the services' files go under: ``/dev/shm`` for memory when it is a
    tmpfs here, else the default temporary directory (the machine line says which)."""
    if where != "memory":
        return None
    shm = Path("/dev/shm")  # noqa: S108 - mkdtemp makes a private directory under it
    with contextlib.suppress(OSError):
        mounts = Path("/proc/mounts").read_text().splitlines()
        if any(line.split()[1:3] == [str(shm), "tmpfs"] for line in mounts):
            return str(shm)
    return None


def _stopped(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test in seconds")
    parser.add_argument("--scenarios", default="s1,s2,s3,s4,s5")
    parser.add_argument(
        "--rows",
        default="",
        help="comma-separated rows, each a row's key (ceiling, papo-durable, papo-redis, "
        "papo-in-memory, socketio, channels, node) or the start of its name",
    )
    parser.add_argument(
        "--size",
        action="append",
        default=[],
        metavar="SCENARIO.KEY=N",
        help="change one size, e.g. --size s4.seconds=40 --size s4.repeats=1 (repeatable)",
    )
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    parser.add_argument(
        "--services-core",
        default=SERVER_CORE,
        help="core for PostgreSQL and Redis (default: the server's own)",
    )
    parser.add_argument(
        "--services-idle",
        action="store_true",
        help="run PostgreSQL and Redis under SCHED_IDLE: they get only the CPU that core "
        "leaves idle, as on a machine of their own they would take none of it",
    )
    parser.add_argument(
        "--store-core",
        default=LOADGEN_CORE,
        help="core for the history store of the papo rows (default: the generator's)",
    )
    parser.add_argument(
        "--store-priority",
        choices=["idle", "normal"],
        default="idle",
        help="idle (default): the store runs only when its core has nothing else to run",
    )
    parser.add_argument(
        "--files",
        choices=["memory", "disk"],
        default="memory",
        help="where the backing services keep their files: memory (default, /dev/shm: "
        "their disks stand in for disks of their own) or this machine's disk",
    )
    options = parser.parse_args()
    try:
        sizes = resized(QUICK if options.quick else FULL, options.size)
    except ValueError as exc:
        parser.error(f"--size {exc}")
    # A run stopped with SIGTERM (`timeout`, `kill`) unwinds like Ctrl-C: its servers and
    # services are stopped and autogroup scheduling is turned back on.
    signal.signal(signal.SIGTERM, _stopped)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if not (LOADGEN / "node_modules").exists():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=LOADGEN, check=True)
    scenarios = options.scenarios.split(",")
    wanted = [prefix for prefix in options.rows.split(",") if prefix]
    unmatched = [p for p in wanted if not any(_selects(p, r) for r in ROWS)]
    if unmatched:
        # Row names contain commas; a prefix cut at one of them must not select silently.
        known = ", ".join(f"{r.key} ({r.name})" for r in ROWS)
        parser.error(f"--rows: no row is or starts with {unmatched}; rows: {known}")
    rows = [r for r in ROWS if not wanted or any(_selects(p, r) for p in wanted)]
    files = files_dir(options.files)
    where_files = f"in memory ({files})" if files else "on disk"
    if options.files == "memory" and not files:
        where_files += " (no tmpfs at /dev/shm)"
    data_dir = Path(tempfile.mkdtemp(prefix="papo-bench-", dir=files))
    data_dir.chmod(0o755)
    services = Placement(options.services_core, options.services_idle)
    store = Placement(options.store_core, options.store_priority == "idle")
    bench = Bench(sizes, data_dir, services, store)
    started = time.monotonic()
    with per_task_scheduling() as scheduling:
        engines = bench.start_services()
        try:
            bench.run(rows, scenarios)
        finally:
            engines.stop()
            shutil.rmtree(data_dir, ignore_errors=True)
    table = render(rows, scenarios)
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} cores; server on core {SERVER_CORE}, "
        f"load generator on core {LOADGEN_CORE}; PostgreSQL and Redis on {services}; "
        f"history store on {store}; services' files {where_files}; {scheduling}; "
        f"{'sizes changed: ' + ' '.join(options.size) + '; ' if options.size else ''}"
        f"{time.monotonic() - started:.0f} s"
    )
    print(table)
    out = Path(options.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"bench-{time.strftime('%Y%m%d-%H%M%S')}{'-quick' if options.quick else ''}.json"
    path.write_text(
        json.dumps({"sizes": bench.sizes, "rows": [r.__dict__ for r in rows]}, indent=2)
    )
    print(f"raw results: {path}")
    failed = [r.name for r in rows for s in scenarios if not r.results.get(s)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
