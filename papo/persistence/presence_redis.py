"""``Presence`` on Redis, shared by every node, with crashed nodes expiring on their own.

Keys (one hash slot, ``{presence}``, so a Redis Cluster serves them too):

- ``papo:{presence}:entries`` sorted set: one member ``<room>\\x1f<user>\\x1f<connection>``
  per live connection and room (room empty for "connected at all"), scored by its
  expiry in Redis time (ms). Each node re-scores its own members every ``ttl / 3``.
- ``papo:{presence}:room:<room>`` hash: user -> number of live connections in the room;
  ``papo:{presence}:users`` the same for being connected at all. The counters make
  "first in, last out" atomic across nodes (each change is one Lua script).
- ``papo:{presence}:names`` hash: user -> display name, for ``online``.
- ``papo:{presence}:nodes`` sorted set: node id -> expiry, for ``nodes``.

Every node looks for expired members every ``reap_seconds``; removing one is atomic
(only one node wins it), and the winner reports the user's departure so it is pushed
to the room. A node that lost Redis keeps its entries in memory and writes them again
when Redis answers; users whose entries were gone meanwhile are reported as back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Sequence
from typing import cast

from redis.asyncio import Redis
from redis.exceptions import RedisError

from papo.hub.broker import BrokerError
from papo.hub.metrics import HubMetrics
from papo.hub.presence import PresenceChanged
from papo.hub.tasks import stop_task
from papo.protocol.frames import UserRef

log = logging.getLogger("papo.presence")

PREFIX = "papo:{presence}"
ENTRIES = f"{PREFIX}:entries"
USERS = f"{PREFIX}:users"
NAMES = f"{PREFIX}:names"
NODES = f"{PREFIX}:nodes"
SEP = "\x1f"
CHUNK = 200
REAP_BATCH = 500

# KEYS: entries, names, count key per entry. ARGV: ttl_ms, then member, user, name per
# entry. Adds or re-scores each entry; returns the positions (1-based) of entries that
# were new and made their user's count go from 0 to 1.
_WRITE = """
local t = redis.call('TIME')
local expiry = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) + tonumber(ARGV[1])
local first = {}
for i = 3, #KEYS do
  local a = (i - 3) * 3 + 2
  local member, user, name = ARGV[a], ARGV[a + 1], ARGV[a + 2]
  if redis.call('ZADD', KEYS[1], expiry, member) == 1 then
    if name ~= '' then redis.call('HSET', KEYS[2], user, name) end
    if redis.call('HINCRBY', KEYS[i], user, 1) == 1 then first[#first + 1] = i - 2 end
  end
end
return first
"""

# KEYS: entries, count key. ARGV: member, user, expired_only. Returns 1 when this removed
# the user's last connection there. With expired_only, a member re-scored meanwhile stays.
_REMOVE = """
if ARGV[3] == '1' then
  local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if not score or tonumber(score) > now then return 0 end
end
if redis.call('ZREM', KEYS[1], ARGV[1]) == 1 then
  local left = redis.call('HINCRBY', KEYS[2], ARGV[2], -1)
  if left <= 0 then
    redis.call('HDEL', KEYS[2], ARGV[2])
    return 1
  end
end
return 0
"""

# KEYS: a sorted set scored by expiry. ARGV: limit. Members whose expiry has passed.
_EXPIRED = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
"""

# KEYS: nodes. ARGV: node id, ttl_ms. Refreshes this node, forgets dead ones, lists live.
_NODES = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""


def room_key(room: str) -> str:
    return f"{PREFIX}:room:{room}" if room else USERS


class RedisPresence:
    def __init__(
        self,
        redis: Redis,
        metrics: HubMetrics,
        *,
        node_id: str,
        ttl_seconds: float = 6.0,
        reap_seconds: float = 1.0,
    ) -> None:
        self._redis = redis
        self._metrics = metrics
        self.node_id = node_id
        self._ttl_ms = int(ttl_seconds * 1000)
        self._refresh_seconds = ttl_seconds / 3
        self._reap_seconds = reap_seconds
        self._write = redis.register_script(_WRITE)
        self._remove = redis.register_script(_REMOVE)
        self._expired = redis.register_script(_EXPIRED)
        self._nodes = redis.register_script(_NODES)
        # member -> (room, user): this node's own entries, the source of truth it rewrites.
        self._local: dict[str, tuple[str, UserRef]] = {}
        self._changed: PresenceChanged | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self, changed: PresenceChanged) -> None:
        self._changed = changed
        self._task = asyncio.create_task(self._maintain(), name="papo-presence")

    async def stop(self) -> None:
        if self._task is not None:
            await stop_task(self._task)
        members = list(self._local.items())
        self._local.clear()
        with contextlib.suppress(RedisError, OSError):
            for member, (room, user) in members:
                await self._remove(keys=[ENTRIES, room_key(room)], args=[member, user.id, "0"])
            await self._redis.zrem(NODES, self.node_id)

    # --- writes: never raise -------------------------------------------------------------

    async def add(self, room: str, user: UserRef, connection: str) -> bool:
        return await self._enter(room, user, connection)

    async def connect(self, user_id: str, connection: str) -> bool:
        return await self._enter("", UserRef(id=user_id, name=""), connection)

    async def remove(self, room: str, user_id: str, connection: str) -> bool:
        return await self._leave(room, user_id, connection)

    async def disconnect(self, user_id: str, connection: str) -> bool:
        return await self._leave("", user_id, connection)

    async def _enter(self, room: str, user: UserRef, connection: str) -> bool:
        member = SEP.join((room, user.id, connection))
        self._local[member] = (room, user)
        try:
            first = await self._write_entries([(member, room, user)])
        except (RedisError, OSError) as exc:
            self._failed("add", exc)
            return False  # written (and reported, if first) by the next refresh
        return bool(first)

    async def _leave(self, room: str, user_id: str, connection: str) -> bool:
        member = SEP.join((room, user_id, connection))
        if self._local.pop(member, None) is None:
            return False
        try:
            last = await self._remove(keys=[ENTRIES, room_key(room)], args=[member, user_id, "0"])
        except (RedisError, OSError) as exc:
            self._failed("remove", exc)
            return False  # the entry expires and whoever reaps it reports the departure
        return bool(last)

    async def _write_entries(self, entries: Sequence[tuple[str, str, UserRef]]) -> list[int]:
        keys = [ENTRIES, NAMES, *(room_key(room) for _, room, _ in entries)]
        args: list[str | int] = [self._ttl_ms]
        for member, _, user in entries:
            args += [member, user.id, user.name]
        first: list[int] = await self._write(keys=keys, args=args)
        return first

    def _failed(self, operation: str, exc: BaseException) -> None:
        self._metrics.presence_errors.inc()
        log.warning("presence update failed", extra={"op": operation, "error": repr(exc)})

    # --- reads ---------------------------------------------------------------------------

    async def online(self, room: str) -> list[UserRef]:
        try:
            keys = await cast("Awaitable[list[bytes]]", self._redis.hkeys(room_key(room)))
            users = [u.decode() for u in keys]
            names = (
                await cast("Awaitable[list[bytes | None]]", self._redis.hmget(NAMES, users))
                if users
                else []
            )
        except (RedisError, OSError) as exc:
            raise BrokerError(f"presence unavailable: {exc}") from exc
        return [
            UserRef(id=user, name=name.decode() if name else "")
            for user, name in zip(users, names, strict=True)
        ]

    async def is_online(self, user_id: str) -> bool:
        try:
            return await cast("Awaitable[bool]", self._redis.hexists(USERS, user_id))
        except (RedisError, OSError) as exc:
            raise BrokerError(f"presence unavailable: {exc}") from exc

    async def nodes(self) -> list[str]:
        try:
            live = await self._nodes(keys=[NODES], args=[self.node_id, self._ttl_ms])
        except (RedisError, OSError) as exc:
            raise BrokerError(f"presence unavailable: {exc}") from exc
        return sorted(node.decode() for node in live)

    # --- upkeep --------------------------------------------------------------------------

    async def _maintain(self) -> None:
        next_refresh = 0.0
        while True:
            try:
                if time.monotonic() >= next_refresh:
                    next_refresh = time.monotonic() + self._refresh_seconds
                    await self._refresh()
                await self._reap()
            except (RedisError, OSError) as exc:
                self._failed("upkeep", exc)
                next_refresh = 0.0  # rewrite everything as soon as Redis is back
            except Exception:
                log.exception("presence upkeep failed")
            await asyncio.sleep(min(self._reap_seconds, self._refresh_seconds))

    async def _refresh(self) -> None:
        """Re-score this node's entries; report users an outage had dropped as back."""
        await self._nodes(keys=[NODES], args=[self.node_id, self._ttl_ms])
        entries = [(member, room, user) for member, (room, user) in list(self._local.items())]
        for start in range(0, len(entries), CHUNK):
            chunk = entries[start : start + CHUNK]
            for position in await self._write_entries(chunk):
                _, room, user = chunk[position - 1]
                if room:
                    await self._report(room, user, True)

    async def _reap(self) -> None:
        """Remove other nodes' expired entries; report users who thereby left a room."""
        expired = await self._expired(keys=[ENTRIES], args=[REAP_BATCH])
        for raw in expired:
            member = raw.decode()
            if member in self._local:
                continue  # ours and alive: the next refresh re-scores it
            room, user_id, _ = member.split(SEP)
            last = await self._remove(keys=[ENTRIES, room_key(room)], args=[member, user_id, "1"])
            if not last:
                continue
            self._metrics.presence_expired.inc()
            if room:
                name = await cast("Awaitable[bytes | None]", self._redis.hget(NAMES, user_id))
                user = UserRef(id=user_id, name=name.decode() if name else "")
                await self._report(room, user, False)

    async def _report(self, room: str, user: UserRef, online: bool) -> None:
        if self._changed is None:
            return
        try:
            await self._changed(room, user, online)
        except Exception as exc:  # e.g. the broker is down too: the room misses one event
            log.warning("presence change not published", extra={"room": room, "error": repr(exc)})
