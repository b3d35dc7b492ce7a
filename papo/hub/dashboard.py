"""The dashboard feed: every node publishes its own counters on one broker channel.

A dashboard is an ordinary WebSocket client listening to ``dashboard``; since each node
publishes there every interval, a dashboard connected to any node sees every node, and
a node that stops publishing (crashed, partitioned) drops out of the dashboard's sums
by itself. The figures are the node's own Prometheus counters, so the dashboard and
``/metrics`` never disagree. Domains add figures through ``add_panel``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from prometheus_client import Counter

from papo.hub.broker import BrokerError
from papo.hub.tasks import stop_task
from papo.protocol.frames import DashboardStats

if TYPE_CHECKING:
    from papo.hub.hub import Hub

log = logging.getLogger("papo.dashboard")

DASHBOARD_CHANNEL = "dashboard"

PanelSource = Callable[[], Mapping[str, float]]


def counter_value(counter: Counter) -> float:
    """The current total of an unlabelled counter, through its public ``collect``."""
    return sum(
        sample.value
        for metric in counter.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


class DashboardFeed:
    def __init__(self, hub: Hub, node: str, interval: float) -> None:
        self._hub = hub
        self.node = node
        self.interval = interval
        self._panels: dict[str, PanelSource] = {}
        self._task: asyncio.Task[None] | None = None
        self._previous = (time.monotonic(), self._messages(), self._deliveries())

    def add_panel(self, name: str, source: PanelSource) -> None:
        """Figures a domain wants on the dashboard, read once per interval."""
        self._panels[name] = source

    def _messages(self) -> float:
        return counter_value(self._hub.metrics.messages)

    def _deliveries(self) -> float:
        return counter_value(self._hub.metrics.fanout_recipients)

    def snapshot(self) -> DashboardStats:
        """This node's figures now; rates are over the time since the last snapshot."""
        now, messages, deliveries = time.monotonic(), self._messages(), self._deliveries()
        since, messages_before, deliveries_before = self._previous
        elapsed = max(now - since, 1e-6)
        self._previous = (now, messages, deliveries)
        panels: dict[str, dict[str, float]] = {}
        for name, source in self._panels.items():
            try:
                panels[name] = dict(source())
            except Exception as exc:  # a broken panel must not stop the others
                log.warning("dashboard panel failed", extra={"panel": name, "error": repr(exc)})
        return DashboardStats(
            node=self.node,
            ts=time.time(),
            interval=self.interval,
            connections=len(self._hub.connections),
            rooms=self._hub.fanout.channel_count("room:"),
            messages_per_second=round((messages - messages_before) / elapsed, 2),
            deliveries_per_second=round((deliveries - deliveries_before) / elapsed, 2),
            messages_total=int(messages),
            slow_consumer_closes=int(counter_value(self._hub.metrics.slow_consumers)),
            panels=panels,
        )

    async def start(self) -> None:
        if self._task is None and self.interval > 0:
            self._task = asyncio.create_task(self._run(), name="papo-dashboard-feed")

    async def stop(self) -> None:
        if self._task is not None:
            await stop_task(self._task)
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            # The broker counts its own errors; the next interval tries again.
            with contextlib.suppress(BrokerError):
                await self._hub.fanout.publish(DASHBOARD_CHANNEL, self.snapshot())
