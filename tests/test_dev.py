"""``papo dev`` on an empty data dir: everything up, data kept, nothing left behind."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from arq import create_pool
from arq.connections import RedisSettings

from papo.persistence.s3 import S3Location, S3Storage
from papo.server.embedded.process import free_port, is_alive
from papo.workers.settings import QUEUE_NAME

pytestmark = pytest.mark.slow


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


class DevProcess:
    def __init__(self, data_dir: Path) -> None:
        self.port = free_port()
        self.output = data_dir / f"dev-{self.port}.log"
        env = {
            "PATH": os.environ["PATH"],
            "PAPO_DATA_DIR": str(data_dir),
            "PAPO_PORT": str(self.port),
        }
        with self.output.open("wb") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "papo.server.cli", "dev"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.url = f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return self.output.read_text(errors="replace")

    def wait_ready(self, seconds: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < seconds:
            assert self.popen.poll() is None, self.log()
            try:
                if (
                    httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
                    and httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200
                ):
                    return time.monotonic() - started
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"papo dev not ready in {seconds} s:\n{self.log()}")

    def service_url(self, name: str) -> str:
        match = re.search(rf"^\s+{name}\s+(\S+)$", self.log(), re.MULTILINE)
        assert match, self.log()
        return match.group(1)

    def interrupt(self) -> int:
        self.popen.send_signal(signal.SIGINT)
        return self.popen.wait(60)


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="papo-dev-"))
    path.chmod(0o755)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


async def _probe_job(redis_url: str) -> object:
    pool = await create_pool(RedisSettings.from_dsn(redis_url), default_queue_name=QUEUE_NAME)
    try:
        job = await pool.enqueue_job("probe", "hello")
        assert job is not None
        return await job.result(timeout=20)
    finally:
        await pool.aclose()


def _storage(url: str) -> S3Storage:
    return S3Storage(S3Location(url, "papo", "us-east-1", "papo", "papo-secret"))


async def _s3_put(url: str, body: bytes) -> None:
    async with _storage(url).client() as client:
        await client.put_object(Bucket="papo", Key="kept.txt", Body=body)


async def _s3_get(url: str) -> bytes:
    async with _storage(url).client() as client:
        response = await client.get_object(Bucket="papo", Key="kept.txt")
        async with response["Body"] as stream:
            data: bytes = await stream.read()
            return data


def test_dev_runs_everything_keeps_data_and_leaves_no_process(data_dir: Path) -> None:
    first = DevProcess(data_dir)
    try:
        assert first.wait_ready(90) < 90
        pids = _descendants(first.popen.pid)
        assert len(pids) >= 4, "postgres, redis, mongo and s3 run as children"
        result = asyncio.run(_probe_job(first.service_url("redis")))
        assert isinstance(result, dict)
        assert result["payload"] == "hello"
        database_url = first.service_url("database")

        async def remember() -> None:
            connection = await asyncpg.connect(database_url)
            await connection.execute(
                "INSERT INTO users (email, display_name, role) VALUES ($1, $2, 'customer')",
                "kept@example.com",
                "Kept",
            )
            await connection.close()

        asyncio.run(remember())
        asyncio.run(_s3_put(first.service_url("s3"), b"an upload made under papo dev"))
    finally:
        assert first.interrupt() == 0, first.log()
    assert [pid for pid in pids if is_alive(pid)] == []
    assert "papo dev stopped" in first.log()

    second = DevProcess(data_dir)
    try:
        second.wait_ready(90)

        async def recall() -> object:
            connection = await asyncpg.connect(second.service_url("database"))
            try:
                return await connection.fetchval(
                    "SELECT display_name FROM users WHERE email = 'kept@example.com'"
                )
            finally:
                await connection.close()

        assert asyncio.run(recall()) == "Kept"
        assert asyncio.run(_s3_get(second.service_url("s3"))) == b"an upload made under papo dev"
        pids = _descendants(second.popen.pid)
        second.popen.send_signal(signal.SIGTERM)
        assert second.popen.wait(60) == 0
    finally:
        if second.popen.poll() is None:
            second.popen.kill()
    assert [pid for pid in pids if is_alive(pid)] == []
