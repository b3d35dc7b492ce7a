"""The ``Broker`` port: publish/subscribe of encoded events between nodes.

Contract:
- ``publish(channel, payload)`` delivers ``payload`` (already-encoded bytes, never
  decoded again) to every node subscribed to ``channel``, the publishing node included.
- Per channel, payloads published by one node arrive in the order they were published.
  ``ordered`` is True only when payloads from *all* publishers arrive in publish order
  (one process); otherwise the hub re-orders room messages by sequence number itself.
- A node holds one subscription per channel however many of its connections listen;
  the hub counts listeners and calls ``subscribe``/``unsubscribe`` on the edges.
  Subscribing never fails: an adapter that lost its server remembers the channel and
  subscribes again when it is back, then calls ``on_resubscribed`` so the hub can fetch
  from history whatever was published meanwhile.
- Delivery goes to the single handler given to ``start``; adapters never import the hub.
- Delivery is at most once: history (by sequence number) fills gaps.
- ``publish_many(items)`` publishes ``(channel, payload)`` pairs in the given order, as
  one round trip where the server allows it (a batch of stored messages from many rooms).
- ``publish``/``publish_many`` raise ``BrokerError`` when a payload may not have reached
  the other nodes; ``ready`` is False while the adapter knows it cannot deliver.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

DeliveryHandler = Callable[[str, bytes], None]
ResubscribedHandler = Callable[[], None]


class BrokerError(Exception):
    """The broker could not publish; the caller must not acknowledge the work as done."""


class Broker(Protocol):
    @property
    def ordered(self) -> bool: ...

    @property
    def ready(self) -> bool: ...

    async def start(
        self, deliver: DeliveryHandler, on_resubscribed: ResubscribedHandler
    ) -> None: ...

    async def stop(self) -> None: ...

    async def subscribe(self, channel: str) -> None: ...

    async def unsubscribe(self, channel: str) -> None: ...

    async def publish(self, channel: str, payload: bytes) -> None: ...

    async def publish_many(self, items: Sequence[tuple[str, bytes]]) -> None: ...
