"""Typed settings, read from the environment once at the entry point.

Every component gets a frozen dataclass; ``Settings`` composes them. Nothing in papo
reads ``os.environ`` after start-up: the CLI builds a ``Settings`` and passes it down,
so tests can build one from a plain dict.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import urlsplit

LogFormat = Literal["json", "text"]
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MIN_JWT_SECRET_LENGTH = 32

T = TypeVar("T")


class ConfigError(Exception):
    """A setting has a value papo cannot use; start-up stops with exit code 2."""

    def __init__(self, variable: str, value: str | None, expected: str) -> None:
        self.variable = variable
        self.value = value
        self.expected = expected
        shown = "(unset)" if value is None else repr(value)
        super().__init__(f"{variable}={shown} is invalid: expected {expected}")


@dataclass(frozen=True)
class HttpSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    drain_seconds: float = 10.0


@dataclass(frozen=True)
class LogSettings:
    level: str = "INFO"
    format: LogFormat = "json"


@dataclass(frozen=True)
class ServiceUrls:
    """Where the backing services live; ``None`` means "not configured"."""

    database: str | None = None
    redis: str | None = None
    mongo: str | None = None
    s3: str | None = None

    def configured(self) -> dict[str, str]:
        return {name: url for name, url in dataclasses.asdict(self).items() if url}


@dataclass(frozen=True)
class S3Settings:
    bucket: str = "papo"
    region: str = "us-east-1"
    access_key_id: str = "papo"
    secret_access_key: str = field(default="papo-secret", repr=False)


@dataclass(frozen=True)
class AuthSettings:
    jwt_secret: str = field(default="", repr=False)
    jwt_key_id: str = "k1"
    # Older signing secrets still accepted for verification while tokens age out.
    previous_jwt_secrets: dict[str, str] = field(default_factory=dict, repr=False)
    access_token_seconds: int = 900
    refresh_token_seconds: int = 30 * 24 * 3600
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 65536
    trusted_issuers: str = ""  # JSON list, or the path of a file holding one
    rate_login_ip: str = "30/300"
    rate_login_account: str = "10/300"
    rate_register_ip: str = "20/3600"


@dataclass(frozen=True)
class RealtimeSettings:
    max_frame_bytes: int = 65536
    max_message_length: int = 4000
    outbox_frames: int = 1024
    max_rooms_per_connection: int = 200
    resume_limit: int = 1000
    frames_per_second: float = 50.0
    frame_burst: int = 200
    heartbeat_seconds: float = 20.0
    auth_timeout_seconds: float = 5.0
    dashboard_interval_seconds: float = 1.0


BrokerChoice = Literal["auto", "memory", "redis"]


@dataclass(frozen=True)
class ScaleSettings:
    """How nodes share work. ``auto`` uses Redis whenever ``PAPO_REDIS_URL`` is set."""

    broker: BrokerChoice = "auto"
    redis_sharded: bool = False
    presence_ttl_seconds: float = 6.0
    reorder_wait_seconds: float = 0.05
    node_id: str = ""

    def uses_redis(self, urls: ServiceUrls) -> bool:
        return self.broker == "redis" or (self.broker == "auto" and bool(urls.redis))


@dataclass(frozen=True)
class Settings:
    http: HttpSettings = HttpSettings()
    log: LogSettings = LogSettings()
    urls: ServiceUrls = ServiceUrls()
    s3: S3Settings = S3Settings()
    auth: AuthSettings = AuthSettings()
    realtime: RealtimeSettings = RealtimeSettings()
    scale: ScaleSettings = ScaleSettings()
    data_dir: Path = Path(".papo")
    readiness_timeout: float = 2.0

    def with_urls(self, **urls: str) -> Settings:
        return dataclasses.replace(self, urls=dataclasses.replace(self.urls, **urls))

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Build settings from ``PAPO_*`` variables; raises ``ConfigError`` on bad values."""
        reader = _EnvReader(env)
        return cls(
            http=HttpSettings(
                host=reader.text("PAPO_HOST", HttpSettings.host),
                port=reader.integer("PAPO_PORT", HttpSettings.port, low=0, high=65535),
                drain_seconds=reader.number(
                    "PAPO_DRAIN_SECONDS", HttpSettings.drain_seconds, low=0.0, high=600.0
                ),
            ),
            log=LogSettings(
                level=reader.choice("PAPO_LOG_LEVEL", LogSettings.level, LOG_LEVELS, upper=True),
                format=reader.log_format("PAPO_LOG_FORMAT"),
            ),
            urls=ServiceUrls(
                database=reader.url("PAPO_DATABASE_URL", ("postgres", "postgresql")),
                redis=reader.url("PAPO_REDIS_URL", ("redis", "rediss", "unix")),
                mongo=reader.url("PAPO_MONGO_URL", ("mongodb", "mongodb+srv")),
                s3=reader.url("PAPO_S3_URL", ("http", "https")),
            ),
            s3=S3Settings(
                bucket=reader.text("PAPO_S3_BUCKET", S3Settings.bucket),
                region=reader.text("PAPO_S3_REGION", S3Settings.region),
                access_key_id=reader.text("PAPO_S3_ACCESS_KEY_ID", S3Settings.access_key_id),
                secret_access_key=reader.text(
                    "PAPO_S3_SECRET_ACCESS_KEY", S3Settings.secret_access_key
                ),
            ),
            auth=AuthSettings(
                jwt_secret=reader.secret("PAPO_JWT_SECRET"),
                jwt_key_id=reader.key_id("PAPO_JWT_KEY_ID", "k1"),
                previous_jwt_secrets=reader.keyring("PAPO_JWT_PREVIOUS_SECRETS"),
                argon2_time_cost=reader.integer("PAPO_ARGON2_TIME_COST", 3, low=1, high=20),
                argon2_memory_kib=reader.integer(
                    "PAPO_ARGON2_MEMORY_KIB", 65536, low=1024, high=4 * 1024 * 1024
                ),
                trusted_issuers=reader.text("PAPO_TRUSTED_ISSUERS", ""),
                rate_login_ip=reader.rate("PAPO_RATE_LOGIN_IP", "30/300"),
                rate_login_account=reader.rate("PAPO_RATE_LOGIN_ACCOUNT", "10/300"),
                rate_register_ip=reader.rate("PAPO_RATE_REGISTER_IP", "20/3600"),
                access_token_seconds=reader.integer(
                    "PAPO_ACCESS_TOKEN_SECONDS",
                    AuthSettings.access_token_seconds,
                    low=10,
                    high=24 * 3600,
                ),
                refresh_token_seconds=reader.integer(
                    "PAPO_REFRESH_TOKEN_SECONDS",
                    AuthSettings.refresh_token_seconds,
                    low=60,
                    high=365 * 24 * 3600,
                ),
            ),
            realtime=RealtimeSettings(
                max_frame_bytes=reader.integer(
                    "PAPO_WS_MAX_FRAME_BYTES", 65536, low=1024, high=16 * 1024 * 1024
                ),
                max_message_length=reader.integer(
                    "PAPO_MAX_MESSAGE_LENGTH", 4000, low=1, high=16000
                ),
                outbox_frames=reader.integer("PAPO_WS_OUTBOX_FRAMES", 1024, low=8, high=1_000_000),
                max_rooms_per_connection=reader.integer(
                    "PAPO_MAX_ROOMS_PER_CONNECTION", 200, low=1, high=100_000
                ),
                resume_limit=reader.integer("PAPO_RESUME_LIMIT", 1000, low=1, high=1_000_000),
                frames_per_second=reader.number(
                    "PAPO_WS_FRAMES_PER_SECOND", 50.0, low=0.1, high=1_000_000.0
                ),
                frame_burst=reader.integer("PAPO_WS_FRAME_BURST", 200, low=1, high=1_000_000),
                heartbeat_seconds=reader.number(
                    "PAPO_WS_HEARTBEAT_SECONDS", 20.0, low=1.0, high=600.0
                ),
                auth_timeout_seconds=reader.number(
                    "PAPO_WS_AUTH_TIMEOUT_SECONDS", 5.0, low=0.1, high=120.0
                ),
                dashboard_interval_seconds=reader.number(
                    "PAPO_DASHBOARD_INTERVAL_SECONDS", 1.0, low=0.1, high=60.0
                ),
            ),
            scale=ScaleSettings(
                broker=reader.broker("PAPO_BROKER"),
                redis_sharded=reader.flag("PAPO_REDIS_SHARDED", False),
                presence_ttl_seconds=reader.number(
                    "PAPO_PRESENCE_TTL_SECONDS", 6.0, low=1.0, high=300.0
                ),
                reorder_wait_seconds=reader.number(
                    "PAPO_REORDER_WAIT_SECONDS", 0.05, low=0.001, high=10.0
                ),
                node_id=reader.node_id("PAPO_NODE_ID"),
            ),
            data_dir=Path(reader.text("PAPO_DATA_DIR", ".papo")),
            readiness_timeout=reader.number("PAPO_READINESS_TIMEOUT", 2.0, low=0.1, high=60.0),
        )


class _EnvReader:
    """Parses one variable at a time and names it in every error."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env = env

    def _raw(self, name: str) -> str | None:
        value = self._env.get(name)
        return None if value is None or value.strip() == "" else value.strip()

    def _parse(self, name: str, default: T, parse: Callable[[str], T], expected: str) -> T:
        raw = self._raw(name)
        if raw is None:
            return default
        try:
            return parse(raw)
        except ValueError:
            raise ConfigError(name, self._env.get(name), expected) from None

    def text(self, name: str, default: str) -> str:
        return self._raw(name) or default

    def integer(self, name: str, default: int, *, low: int, high: int) -> int:
        def parse(raw: str) -> int:
            value = int(raw)
            if not low <= value <= high:
                raise ValueError
            return value

        return self._parse(name, default, parse, f"an integer from {low} to {high}")

    def number(self, name: str, default: float, *, low: float, high: float) -> float:
        def parse(raw: str) -> float:
            value = float(raw)
            if not low <= value <= high:
                raise ValueError
            return value

        return self._parse(name, default, parse, f"a number from {low:g} to {high:g}")

    def choice(self, name: str, default: str, allowed: tuple[str, ...], *, upper: bool) -> str:
        def parse(raw: str) -> str:
            value = raw.upper() if upper else raw
            if value not in allowed:
                raise ValueError
            return value

        return self._parse(name, default, parse, "one of " + ", ".join(allowed))

    def flag(self, name: str, default: bool) -> bool:
        def parse(raw: str) -> bool:
            lowered = raw.lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError

        return self._parse(name, default, parse, "true or false")

    def broker(self, name: str) -> BrokerChoice:
        value = self.choice(name, "auto", ("auto", "memory", "redis"), upper=False)
        return "memory" if value == "memory" else "redis" if value == "redis" else "auto"

    def node_id(self, name: str) -> str:
        def parse(raw: str) -> str:
            if not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", raw):
                raise ValueError
            return raw

        return self._parse(name, "", parse, "1-64 letters, digits, '.', '_' or '-'")

    def log_format(self, name: str) -> LogFormat:
        value = self.choice(name, "json", ("json", "text"), upper=False)
        return "text" if value == "text" else "json"

    def url(self, name: str, schemes: tuple[str, ...]) -> str | None:
        def parse(raw: str) -> str:
            parts = urlsplit(raw)
            if parts.scheme not in schemes or not (parts.netloc or parts.path):
                raise ValueError
            if parts.scheme != "unix" and parts.port is None and not parts.hostname:
                raise ValueError
            return raw

        return self._parse(
            name,
            None,
            parse,
            "a URL starting with " + " or ".join(f"{scheme}://" for scheme in schemes),
        )

    def key_id(self, name: str, default: str) -> str:
        def parse(raw: str) -> str:
            if not re.fullmatch(r"[A-Za-z0-9._-]{1,32}", raw):
                raise ValueError
            return raw

        return self._parse(name, default, parse, "1-32 letters, digits, '.', '_' or '-'")

    def rate(self, name: str, default: str) -> str:
        def parse(raw: str) -> str:
            count, slash, seconds = raw.partition("/")
            if not slash or int(count) < 1 or int(seconds) < 1:
                raise ValueError
            return f"{int(count)}/{int(seconds)}"

        return self._parse(name, default, parse, "COUNT/SECONDS, e.g. 10/60")

    def keyring(self, name: str) -> dict[str, str]:
        raw = self._raw(name)
        if raw is None:
            return {}
        keys = {}
        for item in raw.split(","):
            kid, colon, secret = item.strip().partition(":")
            if (
                not colon
                or not re.fullmatch(r"[A-Za-z0-9._-]{1,32}", kid)
                or len(secret) < MIN_JWT_SECRET_LENGTH
            ):
                raise ConfigError(
                    name,
                    "<hidden>",
                    f"KID:SECRET pairs separated by commas, secrets of "
                    f"{MIN_JWT_SECRET_LENGTH}+ characters",
                )
            keys[kid] = secret
        return keys

    def secret(self, name: str) -> str:
        def parse(raw: str) -> str:
            if len(raw) < MIN_JWT_SECRET_LENGTH:
                raise ValueError
            return raw

        raw = self._raw(name)
        if raw is None:
            return ""
        try:
            return parse(raw)
        except ValueError:
            # Never echo a secret back, even a bad one.
            raise ConfigError(
                name, "<hidden>", f"at least {MIN_JWT_SECRET_LENGTH} characters"
            ) from None
