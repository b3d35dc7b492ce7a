"""``Broker`` on Redis pub/sub, classic or sharded (``SPUBLISH``/``SSUBSCRIBE``, Redis 7+).

Each node keeps one subscriber connection, whatever the number of channels and local
listeners, and one publishing client. The subscriber connection is read by a single
task that hands ``(channel, payload)`` to the hub as raw bytes; it pings Redis when the
line is quiet, so a server that stopped answering is noticed within two ping periods.
When the connection drops the task reconnects with jittered exponential backoff,
subscribes every channel again and tells the hub, which fills any gap from history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Sequence

from redis.asyncio import ConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError

from papo.hub.broker import BrokerError, DeliveryHandler, ResubscribedHandler
from papo.hub.metrics import HubMetrics
from papo.hub.tasks import stop_task

log = logging.getLogger("papo.broker")

PING_SECONDS = 2.0
BACKOFF_BASE = 0.05
BACKOFF_CAP = 2.0
SUBSCRIBE_CHUNK = 500


class RedisBroker:
    ordered = False  # several nodes publish to one channel: the hub orders by sequence

    def __init__(
        self,
        url: str,
        metrics: HubMetrics,
        *,
        sharded: bool = False,
        ping_seconds: float = PING_SECONDS,
    ) -> None:
        self._metrics = metrics
        self._sharded = sharded
        self._ping_seconds = ping_seconds
        self._publish_command = "SPUBLISH" if sharded else "PUBLISH"
        self._subscribe_command = "SSUBSCRIBE" if sharded else "SUBSCRIBE"
        self._unsubscribe_command = "SUNSUBSCRIBE" if sharded else "UNSUBSCRIBE"
        self._message_kind = b"smessage" if sharded else b"message"
        # Publishing fails fast: a send waiting on it is better answered with an error.
        self._publisher: Redis = Redis.from_url(
            url, socket_connect_timeout=1.0, socket_timeout=2.0, retry_on_timeout=False
        )
        # The subscriber blocks on reads by design; liveness comes from our own pings.
        self._pool = ConnectionPool.from_url(
            url, socket_connect_timeout=2.0, socket_timeout=None, health_check_interval=0
        )
        self._channels: set[str] = set()
        self._connection: AbstractConnection | None = None
        self._deliver: DeliveryHandler | None = None
        self._on_resubscribed: ResubscribedHandler = lambda: None
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()

    @property
    def ready(self) -> bool:
        return self._connected.is_set()

    async def start(self, deliver: DeliveryHandler, on_resubscribed: ResubscribedHandler) -> None:
        self._deliver = deliver
        self._on_resubscribed = on_resubscribed
        self._task = asyncio.create_task(self._run(), name="papo-redis-subscriber")
        # Start-up waits briefly for Redis; a node that cannot reach it keeps trying.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self._connected.wait()

    async def stop(self) -> None:
        if self._task is not None:
            await stop_task(self._task)
        self._connected.clear()
        await self._publisher.aclose()
        await self._pool.disconnect()

    async def subscribe(self, channel: str) -> None:
        self._channels.add(channel)
        await self._send(self._subscribe_command, channel)

    async def unsubscribe(self, channel: str) -> None:
        self._channels.discard(channel)
        await self._send(self._unsubscribe_command, channel)

    async def _send(self, command: str, channel: str) -> None:
        """Best effort: if the line is down, the reconnect subscribes the current set."""
        connection = self._connection
        if connection is None or not self._connected.is_set():
            return
        try:
            await connection.send_command(command, channel, check_health=False)
        except (RedisError, OSError) as exc:
            self._metrics.broker_errors.labels(command.lower()).inc()
            log.warning("subscription change failed", extra={"error": repr(exc)})
            await connection.disconnect(nowait=True)

    async def publish(self, channel: str, payload: bytes) -> None:
        try:
            await self._publisher.execute_command(  # type: ignore[no-untyped-call]
                self._publish_command, channel, payload
            )
        except (RedisError, OSError) as exc:
            self._metrics.broker_errors.labels("publish").inc()
            raise BrokerError(f"could not publish to Redis: {exc}") from exc

    async def publish_many(self, items: Sequence[tuple[str, bytes]]) -> None:
        if len(items) == 1:
            await self.publish(*items[0])
            return
        # One round trip; a pipeline keeps the commands in order on one connection.
        pipeline = self._publisher.pipeline(transaction=False)
        for channel, payload in items:
            pipeline.execute_command(self._publish_command, channel, payload)
        try:
            await pipeline.execute()
        except (RedisError, OSError) as exc:
            self._metrics.broker_errors.labels("publish").inc()
            raise BrokerError(f"could not publish to Redis: {exc}") from exc

    # --- the subscriber ------------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        first = True
        while True:
            connection = self._pool.make_connection()  # type: ignore[no-untyped-call]
            try:
                await connection.connect()
                subscribed = await self._subscribe_all(connection)
                self._connection = connection
                self._connected.set()
                # Channels that changed while the subscriptions were being sent.
                for channel in self._channels - subscribed:
                    await self._send(self._subscribe_command, channel)
                for channel in subscribed - self._channels:
                    await self._send(self._unsubscribe_command, channel)
                self._metrics.broker_connected.set(1)
                if not first:
                    self._metrics.broker_reconnects.inc()
                    log.info("broker reconnected", extra={"channels": len(self._channels)})
                    self._on_resubscribed()
                first = False
                attempt = 0
                await self._read(connection)
            except asyncio.CancelledError:
                await connection.disconnect(nowait=True)
                raise
            except (RedisError, OSError) as exc:
                if self._connected.is_set() or attempt == 0:
                    log.warning("broker connection lost", extra={"error": repr(exc)})
                self._metrics.broker_errors.labels("subscriber").inc()
            self._connected.clear()
            self._connection = None
            self._metrics.broker_connected.set(0)
            await connection.disconnect(nowait=True)
            delay = min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt) * (0.5 + random.random())  # noqa: S311
            attempt += 1
            await asyncio.sleep(delay)

    async def _subscribe_all(self, connection: AbstractConnection) -> set[str]:
        snapshot = set(self._channels)
        channels = sorted(snapshot)
        # Sharded channels may live on different shards: one command per channel.
        chunk_size = 1 if self._sharded else SUBSCRIBE_CHUNK
        for start in range(0, len(channels), chunk_size):
            chunk = channels[start : start + chunk_size]
            await connection.send_command(self._subscribe_command, *chunk, check_health=False)
        return snapshot

    async def _read(self, connection: AbstractConnection) -> None:
        unanswered = 0
        while True:
            response = await connection.read_response(timeout=self._ping_seconds)
            if response is None:  # quiet line: is Redis still there?
                if unanswered:
                    raise ConnectionError("Redis did not answer a ping")
                unanswered += 1
                await connection.send_command("PING", check_health=False)
                continue
            unanswered = 0
            if (
                isinstance(response, list)
                and len(response) == 3
                and response[0] == self._message_kind
                and self._deliver is not None
            ):
                channel = response[1]
                try:
                    self._deliver(channel.decode(), response[2])
                except Exception:
                    log.exception("delivery failed", extra={"channel": channel})
