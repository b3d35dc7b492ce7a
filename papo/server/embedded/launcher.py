"""Starts the engines a configuration lacks and stops them all, newest first."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

from papo.server.embedded.engines import (
    RunningEngine,
    start_mongo,
    start_postgres,
    start_redis,
    start_s3,
)
from papo.server.embedded.process import EngineError

log = logging.getLogger("papo.embedded")

_STARTERS: dict[str, Callable[..., RunningEngine]] = {
    "database": start_postgres,
    "redis": start_redis,
    "mongo": start_mongo,
    "s3": start_s3,
}
SERVICE_NAMES = tuple(_STARTERS)

__all__ = ["SERVICE_NAMES", "EmbeddedServices", "EngineError"]


class EmbeddedServices:
    """Context manager: ``urls`` maps each started service to its URL.

    ``durable=True`` (``papo dev``) keeps data under ``data_dir`` across restarts;
    ``durable=False`` (tests) trades crash safety for speed.
    """

    def __init__(self, data_dir: Path, services: Iterable[str], *, durable: bool) -> None:
        unknown = set(services) - set(_STARTERS)
        if unknown:
            raise ValueError(f"unknown services: {sorted(unknown)}")
        self.data_dir = data_dir.resolve()
        self.services = [name for name in _STARTERS if name in set(services)]
        self.durable = durable
        self.engines: list[RunningEngine] = []

    @property
    def urls(self) -> dict[str, str]:
        return {engine.name: engine.url for engine in self.engines}

    @property
    def pids(self) -> list[int]:
        return [engine.process.pid for engine in self.engines]

    def start(self) -> dict[str, str]:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        errors = []
        # Spawn from this thread: the parent-death signal fires when the spawning
        # *thread* exits, so a helper thread would take its engine down with it.
        for name in self.services:
            try:
                self.engines.append(_STARTERS[name](self.data_dir, durable=self.durable))
            except Exception as exc:
                errors.append(f"{name}: {exc}")
        # Waiting is thread-safe; the engines warm up side by side.
        with ThreadPoolExecutor(max_workers=max(1, len(self.engines))) as pool:
            futures = {engine.name: pool.submit(engine.wait_ready) for engine in self.engines}
            for name, future in futures.items():
                try:
                    future.result()
                except Exception as exc:
                    errors.append(f"{name}: {exc}")
        if errors:
            self.stop()
            raise EngineError("could not start embedded services:\n" + "\n".join(errors))
        return self.urls

    def stop(self) -> None:
        with ThreadPoolExecutor(max_workers=max(1, len(self.engines))) as pool:
            list(pool.map(lambda engine: engine.process.stop(), reversed(self.engines)))
        self.engines.clear()

    def __enter__(self) -> EmbeddedServices:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
