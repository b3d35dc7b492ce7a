"""The ``papo`` command: serve, dev, worker, migrate.

The environment is read here, once; a bad value stops start-up with exit code 2 and
one line naming the variable, the value and what was expected.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import uvicorn

from papo import __version__
from papo.server.config import ConfigError, Settings

EXIT_CONFIG = 2


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="papo",
        description="papo: a self-hostable real-time server. Configured by PAPO_* "
        "environment variables (see .env.example).",
    )
    parser.add_argument("--version", action="version", version=f"papo {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser(
        "serve",
        help="run a production node (every service from PAPO_* URLs)",
        description="Run one papo node. Services come from PAPO_DATABASE_URL, "
        "PAPO_REDIS_URL, PAPO_MONGO_URL and PAPO_S3_URL; logs are JSON lines.",
    )
    commands.add_parser(
        "dev",
        help="run one node for development, starting missing services locally",
        description="Run one papo node and its worker. Any service without a URL is "
        "started from an embedded engine with data under PAPO_DATA_DIR (default .papo); "
        "migrations run at start-up. Ctrl-C stops everything it started.",
    )
    worker = commands.add_parser(
        "worker",
        help="run the background job worker (needs PAPO_REDIS_URL)",
        description="Run the arq worker that executes papo's background jobs.",
    )
    worker.add_argument(
        "--check",
        action="store_true",
        help="exit 0 if a worker reported itself healthy in the last few seconds, else 1",
    )
    migrate = commands.add_parser(
        "migrate",
        help="apply, revert or list database migrations (needs PAPO_DATABASE_URL)",
        description="Manage papo's PostgreSQL schema.",
    )
    steps = migrate.add_subparsers(dest="direction", required=True, metavar="ACTION")
    up = steps.add_parser(
        "up",
        help="apply pending migrations",
        description="Apply pending migrations, up to --to VERSION when given.",
    )
    up.add_argument("--to", type=int, default=None, metavar="VERSION")
    down = steps.add_parser(
        "down",
        help="revert migrations",
        description="Revert migrations newer than --to VERSION (default: the newest one).",
    )
    down.add_argument("--to", type=int, default=None, metavar="VERSION")
    steps.add_parser(
        "status",
        help="list migrations and when each was applied",
        description="List every migration and whether it is applied.",
    )
    protocol = commands.add_parser(
        "protocol",
        help="write or check docs/protocol.md and docs/protocol.schema.json",
        description="Generate the WebSocket protocol documentation from its definitions.",
    )
    protocol.add_argument("--docs", default="docs", help="the docs directory (default: docs)")
    protocol.add_argument(
        "--check", action="store_true", help="exit 1 if the committed files are out of date"
    )
    users = commands.add_parser(
        "users",
        help="manage accounts from the command line (needs PAPO_DATABASE_URL)",
        description="Account administration that must work before any admin exists.",
    )
    user_actions = users.add_subparsers(dest="action", required=True, metavar="ACTION")
    create_admin = user_actions.add_parser(
        "create-admin",
        help="create an admin account",
        description="Create an admin account. The password is read from standard input "
        "with --password-stdin, else from PAPO_ADMIN_PASSWORD, else prompted for.",
    )
    create_admin.add_argument("--email", required=True)
    create_admin.add_argument("--display-name", default="Admin")
    create_admin.add_argument("--password-stdin", action="store_true")
    return parser


def _raise_keyboard_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    # SIGTERM takes the same orderly path as Ctrl-C: drain, stop children, exit 0.
    signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        settings = Settings.from_env(os.environ)
        if args.command == "serve":
            return _serve(settings)
        if args.command == "dev":
            from papo.server.dev import run_dev

            return run_dev(settings, os.environ)
        if args.command == "worker":
            return _worker(settings, check=args.check)
        if args.command == "protocol":
            return _protocol(Path(args.docs), check=args.check)
        if args.command == "users":
            password = _admin_password(args.password_stdin)
            return asyncio.run(_create_admin(settings, args.email, args.display_name, password))
        return asyncio.run(_migrate(settings, args.direction, getattr(args, "to", None)))
    except ConfigError as exc:
        print(f"papo: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 0


def _serve(settings: Settings) -> int:
    from papo.server.app import create_app
    from papo.server.logs import configure_logging
    from papo.server.runner import uvicorn_config

    configure_logging(settings.log)
    server = uvicorn.Server(uvicorn_config(create_app(settings), settings))
    # What exists now (modules, classes, functions: about 50,000 objects) lives as long
    # as the process. Frozen, the cycle collector stops walking it: its full passes,
    # which stop the loop and so every fan-out, get that much shorter.
    gc.collect()
    gc.freeze()
    server.run()
    return 0 if server.started else 1


def _require(value: str | None, variable: str, expected: str) -> str:
    if not value:
        raise ConfigError(variable, None, expected)
    return value


def _worker(settings: Settings, *, check: bool) -> int:
    from papo.server.logs import configure_logging
    from papo.workers.settings import build_worker, worker_is_healthy

    configure_logging(settings.log)
    redis_url = _require(settings.urls.redis, "PAPO_REDIS_URL", "a redis:// URL")
    if check:
        return 0 if asyncio.run(worker_is_healthy(redis_url)) else 1
    build_worker(redis_url, handle_signals=True).run()
    return 0


def _protocol(docs_dir: Path, *, check: bool) -> int:
    from papo.server import contract

    if check:
        stale = contract.stale(docs_dir)
        for name in stale:
            print(f"papo: {docs_dir / name} is out of date; run `papo protocol`", file=sys.stderr)
        return 1 if stale else 0
    for path in contract.write(docs_dir):
        print(f"wrote {path}")
    return 0


def _admin_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    if password := os.environ.get("PAPO_ADMIN_PASSWORD"):
        return password
    import getpass

    return getpass.getpass("Password for the new admin: ")


async def _create_admin(settings: Settings, email: str, display_name: str, password: str) -> int:
    from papo.domains.accounts.model import Role
    from papo.domains.accounts.passwords import Argon2Settings, Passwords
    from papo.domains.accounts.service import create_account
    from papo.domains.accounts.store import AccountStore
    from papo.persistence.postgres import create_pool
    from papo.protocol.errors import PapoError

    url = _require(settings.urls.database, "PAPO_DATABASE_URL", "a postgresql:// URL")
    pool = await create_pool(url)
    passwords = Passwords(
        Argon2Settings(
            time_cost=settings.auth.argon2_time_cost, memory_kib=settings.auth.argon2_memory_kib
        )
    )
    try:
        user = await create_account(
            AccountStore(pool), passwords, email, password, display_name, Role.ADMIN
        )
    except PapoError as error:
        where = f" ({error.field})" if error.field else ""
        print(f"papo: {error.code.value}{where}: {error.message}", file=sys.stderr)
        return 1
    finally:
        await pool.close()
    print(f"created admin {user.email} ({user.id})")
    return 0


async def _migrate(settings: Settings, direction: str, target: int | None) -> int:
    import asyncpg

    from papo.persistence import migrate

    url = _require(settings.urls.database, "PAPO_DATABASE_URL", "a postgresql:// URL")
    connection = await asyncpg.connect(url, timeout=10)
    try:
        if direction == "up":
            applied = await migrate.migrate_up(connection, target)
            print("applied: " + (", ".join(f"{v:04d}" for v in applied) or "nothing pending"))
        elif direction == "down":
            if target is None:
                current = [s.version for s in await migrate.status(connection) if s.applied_at]
                target = max(current, default=1) - 1
            reverted = await migrate.migrate_down(connection, target)
            print("reverted: " + (", ".join(f"{v:04d}" for v in reverted) or "nothing"))
        else:
            for entry in await migrate.status(connection):
                when = entry.applied_at.isoformat() if entry.applied_at else "pending"
                print(f"{entry.version:04d}  {entry.name:<30} {when}")
    finally:
        await connection.close()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
