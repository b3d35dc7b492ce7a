"""Several real ``papo serve`` processes on one Redis: the harness of the scale-out tests.

Each node is its own process on a random port, sharing the session's PostgreSQL and
MongoDB-wire server and a Redis of the cluster's own (so a test can stop it).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from papo.server.config import Settings
from papo.server.embedded.engines import redis_binary
from papo.server.embedded.process import ManagedProcess, free_port, wait_for_port
from tests.conftest import FAST_TEST_ENV


def throwaway_redis_argv(port: int, directory: Path) -> list[str]:
    """A redis-server on loopback that keeps nothing on disk (tests stop and restart it)."""
    return [
        redis_binary(),
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        str(directory),
    ]


@dataclass
class Node:
    name: str
    port: int
    process: ManagedProcess

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def kill(self) -> None:
        """``kill -9``: no drain, no goodbye to Redis or the clients."""
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.popen.wait(10)


@dataclass
class Cluster:
    base: Settings
    jwt_secret: str
    work_dir: Path
    nodes: list[Node] = field(default_factory=list)
    redis_port: int = 0
    redis: ManagedProcess | None = None
    env: dict[str, str] = field(default_factory=dict)  # more PAPO_* settings for every node

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def start_redis(self) -> None:
        if not self.redis_port:
            self.redis_port = free_port()
        argv = throwaway_redis_argv(self.redis_port, self.work_dir)
        self.redis = ManagedProcess("redis", argv, log_path=self.work_dir / "redis.log")
        wait_for_port(self.redis, self.redis_port)

    def stop_redis(self) -> None:
        if self.redis is not None:
            self.redis.stop()
            self.redis = None

    def node_env(self, name: str, port: int) -> dict[str, str]:
        urls = self.base.urls
        assert urls.database
        assert urls.mongo
        return {
            **os.environ,
            "PAPO_HOST": "127.0.0.1",
            "PAPO_PORT": str(port),
            "PAPO_NODE_ID": name,
            "PAPO_JWT_SECRET": self.jwt_secret,
            "PAPO_DATABASE_URL": urls.database,
            "PAPO_MONGO_URL": urls.mongo,
            "PAPO_REDIS_URL": self.redis_url,
            "PAPO_BROKER": "redis",
            **FAST_TEST_ENV,
            "PAPO_LOG_FORMAT": "text",
            "PAPO_WS_FRAMES_PER_SECOND": "1000",
            "PAPO_WS_FRAME_BURST": "1000",
            **self.env,
        }

    async def start_nodes(self, count: int) -> None:
        for index in range(count):
            name, port = f"node-{index}", free_port()
            argv = [sys.executable, "-m", "papo.server.cli", "serve"]
            process = ManagedProcess(
                name,
                argv,
                log_path=self.work_dir / f"{name}.log",
                env=self.node_env(name, port),
            )
            self.nodes.append(Node(name, port, process))
        await asyncio.gather(*(self.wait_ready(node) for node in self.nodes))

    async def wait_ready(self, node: Node, seconds: float = 30.0) -> None:
        deadline = time.monotonic() + seconds
        async with httpx.AsyncClient(base_url=node.url, timeout=2) as http:
            while time.monotonic() < deadline:
                if not node.process.running():
                    raise RuntimeError(f"{node.name} exited:\n{node.process.tail(40)}")
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{node.name} not ready in {seconds:g} s:\n{node.process.tail(40)}")

    def stop(self) -> None:
        for node in self.nodes:
            node.process.stop(timeout=10)
        self.stop_redis()
