"""The ``Broker`` port: publish/subscribe of encoded events between nodes.

Contract:
- ``publish(channel, payload)`` delivers ``payload`` (already-encoded bytes, never
  decoded again) to every node subscribed to ``channel``, the publishing node included.
- Per channel, payloads published by one node arrive in the order they were published.
- A node holds one subscription per channel however many of its connections listen;
  the hub counts listeners and calls ``subscribe``/``unsubscribe`` on the edges.
- Delivery goes to the single handler given to ``start``; adapters never import the hub.
- Delivery is at most once: resume (by sequence number, from ``History``) fills gaps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

DeliveryHandler = Callable[[str, bytes], None]


class BrokerError(Exception):
    """The broker could not publish; the caller must not acknowledge the work as done."""


class Broker(Protocol):
    async def start(self, deliver: DeliveryHandler) -> None: ...

    async def stop(self) -> None: ...

    async def subscribe(self, channel: str) -> None: ...

    async def unsubscribe(self, channel: str) -> None: ...

    async def publish(self, channel: str, payload: bytes) -> None: ...
