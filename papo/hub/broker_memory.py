"""In-process ``Broker`` for a single node and the hub's own tests."""

from __future__ import annotations

from collections.abc import Sequence

from papo.hub.broker import DeliveryHandler, ResubscribedHandler


class MemoryBroker:
    ordered = True  # one process: every publish is delivered in the order it was made
    ready = True

    def __init__(self) -> None:
        self._deliver: DeliveryHandler | None = None
        self._channels: set[str] = set()

    async def start(self, deliver: DeliveryHandler, on_resubscribed: ResubscribedHandler) -> None:
        self._deliver = deliver

    async def stop(self) -> None:
        self._deliver = None
        self._channels.clear()

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)

    async def publish(self, channel: str, payload: bytes) -> None:
        await self.publish_many([(channel, payload)])

    async def publish_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        for channel, payload in items:
            if self._deliver is not None and channel in self._channels:
                self._deliver(channel, payload)
