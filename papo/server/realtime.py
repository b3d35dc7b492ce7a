"""Builds the hub and the frame registry from settings: the adapters are chosen here."""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from papo.domains.accounts.model import Identity
from papo.domains.accounts.permissions import ROLE_PERMISSIONS, Permission
from papo.domains.accounts.service import AccountService
from papo.hub.broker import Broker
from papo.hub.broker_memory import MemoryBroker
from papo.hub.chat import Chat
from papo.hub.connection import Connection, Principal
from papo.hub.dashboard import DASHBOARD_CHANNEL
from papo.hub.directory import Directory, SeenDirectory
from papo.hub.history import History
from papo.hub.history_memory import MemoryHistory
from papo.hub.hub import Hub, HubLimits
from papo.hub.metrics import HubMetrics
from papo.hub.presence import Presence
from papo.hub.presence_memory import MemoryPresence
from papo.hub.rooms import RoomStore
from papo.hub.rooms_cache import CachedRoomStore
from papo.hub.rooms_memory import MemoryRoomStore
from papo.persistence.broker_redis import RedisBroker
from papo.persistence.history_mongo import MongoHistory
from papo.persistence.mongo import database_name
from papo.persistence.presence_redis import RedisPresence
from papo.persistence.rooms_postgres import PostgresRoomStore
from papo.protocol import frames as f
from papo.protocol.errors import ErrorCode, PapoError
from papo.protocol.registry import Registry
from papo.server.config import ConfigError, Settings
from papo.server.resources import Resources
from papo.server.transport import WriteBatcher


def principal_of(identity: Identity) -> Principal:
    return Principal(
        user=f.UserRef(id=str(identity.user_id), name=identity.display_name),
        role=identity.role.value,
        expires_at=identity.expires_at,
    )


class AccountDirectory:
    """The hub's view of accounts: active users by id."""

    def __init__(self, accounts: AccountService) -> None:
        self._accounts = accounts

    async def find(self, user_id: str) -> f.UserRef | None:
        try:
            user = await self._accounts.store.by_id(uuid.UUID(user_id))
        except ValueError:
            return None
        if user is None or user.disabled:
            return None
        return f.UserRef(id=str(user.id), name=user.display_name)


def hub_limits(settings: Settings) -> HubLimits:
    rt = settings.realtime
    return HubLimits(
        max_outbox=rt.outbox_frames,
        max_rooms_per_connection=rt.max_rooms_per_connection,
        max_message_length=rt.max_message_length,
        resume_limit=rt.resume_limit,
        frames_per_second=rt.frames_per_second,
        frame_burst=rt.frame_burst,
        auth_timeout=rt.auth_timeout_seconds,
        heartbeat_seconds=rt.heartbeat_seconds,
        dashboard_interval=rt.dashboard_interval_seconds,
        gap_wait_seconds=settings.scale.reorder_wait_seconds,
    )


@dataclass
class Realtime:
    hub: Hub
    registry: Registry[Connection]
    directory: Directory
    # Several events fanned out together reach each socket in one write.
    batcher: WriteBatcher


def build_realtime(
    settings: Settings,
    resources: Resources,
    accounts: AccountService | None,
    metrics_registry: CollectorRegistry,
) -> Realtime:
    metrics = HubMetrics(metrics_registry)
    broker, presence = build_sharing(settings, resources, metrics)
    history: History = (
        MongoHistory(resources.mongo, database_name(settings.urls.mongo))
        if resources.mongo is not None and settings.urls.mongo
        else MemoryHistory()
    )
    rooms: RoomStore = (
        CachedRoomStore(PostgresRoomStore(resources.pool), metrics=metrics)
        if resources.pool is not None
        else MemoryRoomStore()
    )
    hub = Hub(
        broker=broker,
        presence=presence,
        history=history,
        rooms=rooms,
        metrics=metrics,
        limits=hub_limits(settings),
        node=node_name(settings),
    )
    directory: Directory = AccountDirectory(accounts) if accounts else SeenDirectory()
    registry: Registry[Connection] = Registry()
    Chat(hub, directory).register(registry)
    register_session_frames(registry, accounts)
    register_dashboard_frames(registry, hub)
    registry.freeze()
    batcher = WriteBatcher()
    hub.fanout.writes = batcher
    return Realtime(hub, registry, directory, batcher)


def node_name(settings: Settings) -> str:
    return settings.scale.node_id or f"{socket.gethostname()}-{os.getpid()}"


def build_sharing(
    settings: Settings, resources: Resources, metrics: HubMetrics
) -> tuple[Broker, Presence]:
    """Redis broker and presence when nodes share Redis; in-memory for a single node."""
    node = node_name(settings)
    if not settings.scale.uses_redis(settings.urls):
        return MemoryBroker(), MemoryPresence(node)
    if resources.redis is None or not settings.urls.redis:
        raise ConfigError("PAPO_REDIS_URL", None, "a Redis URL when PAPO_BROKER=redis")
    broker = RedisBroker(settings.urls.redis, metrics, sharded=settings.scale.redis_sharded)
    presence = RedisPresence(
        resources.redis, metrics, node_id=node, ttl_seconds=settings.scale.presence_ttl_seconds
    )
    return broker, presence


DASHBOARD_ROLES = frozenset(
    role.value
    for role, permissions in ROLE_PERMISSIONS.items()
    if Permission.DASHBOARD_VIEW in permissions
)


def register_dashboard_frames(registry: Registry[Connection], hub: Hub) -> None:
    async def subscribe(connection: Connection, frame: f.DashboardSubscribe) -> Any:
        await hub.follow(connection, DASHBOARD_CHANNEL)
        return {
            "node": hub.dashboard.node,
            "nodes": await hub.presence.nodes(),
            "interval": hub.dashboard.interval,
        }

    async def unsubscribe(connection: Connection, frame: f.DashboardUnsubscribe) -> Any:
        await hub.unfollow(connection, DASHBOARD_CHANNEL)
        return {"subscribed": False}

    registry.register(
        f.DashboardSubscribe,
        subscribe,
        summary="Receive every node's `dashboard.stats` each interval.",
        roles=DASHBOARD_ROLES,
        domain="dashboard",
    )
    registry.register(
        f.DashboardUnsubscribe,
        unsubscribe,
        summary="Stop receiving `dashboard.stats`.",
        roles=DASHBOARD_ROLES,
        domain="dashboard",
    )


def register_session_frames(
    registry: Registry[Connection], accounts: AccountService | None
) -> None:
    async def already(connection: Connection, frame: f.Auth) -> Any:
        raise PapoError(ErrorCode.CONFLICT, "this connection is already authenticated")

    async def ping(connection: Connection, frame: f.Ping) -> Any:
        return {"ts": time.time()}

    async def refresh(connection: Connection, frame: f.AuthRefresh) -> Any:
        if accounts is None:
            raise PapoError(ErrorCode.UNAVAILABLE, "accounts need a database")
        identity = await accounts.authenticate(frame.token)
        if str(identity.user_id) != connection.user_id:
            raise PapoError(
                ErrorCode.FORBIDDEN, "the new token belongs to another user", field="token"
            )
        connection.principal = principal_of(identity)
        connection.on_reauthenticated()
        return {"expires_at": identity.expires_at}

    registry.register(f.Auth, already, summary="Authenticate (first frame only, see Connecting).")
    registry.register(f.AuthRefresh, refresh, summary="Swap in a fresh access token.")
    registry.register(f.Ping, ping, summary="Round-trip check; replies with the server time.")
