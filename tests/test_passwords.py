"""argon2id hashing: rehash on login when parameters change, equal cost for unknown emails."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from papo.domains.accounts.passwords import Argon2Settings, Passwords
from papo.server.config import Settings
from tests.conftest import http_to, register_and_login, unique_email


async def _stored_hash(settings: Settings, email: str) -> str:
    assert settings.urls.database
    connection = await asyncpg.connect(settings.urls.database)
    try:
        value: str = await connection.fetchval(
            "SELECT password_hash FROM users WHERE email = $1", email
        )
        return value
    finally:
        await connection.close()


@pytest.fixture
async def stronger(base_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """A node whose argon2 parameters were raised since the accounts were created."""
    auth = dataclasses.replace(base_settings.auth, argon2_time_cost=2, argon2_memory_kib=16384)
    settings = dataclasses.replace(base_settings, auth=auth)
    async with http_to(settings) as client:
        yield client


async def test_hashes_are_argon2id_and_upgraded_on_login(
    http: httpx.AsyncClient, stronger: httpx.AsyncClient, settings: Settings
) -> None:
    session = await register_and_login(http)
    before = await _stored_hash(settings, session.email)
    assert before.startswith("$argon2id$")
    assert "m=8192,t=1" in before
    login = await stronger.post(
        "/api/auth/login", json={"email": session.email, "password": session.password}
    )
    assert login.status_code == 200
    after = await _stored_hash(settings, session.email)
    assert "m=16384,t=2" in after
    relogin = await http.post(
        "/api/auth/login", json={"email": session.email, "password": session.password}
    )
    assert relogin.status_code == 200, "the upgraded hash still verifies"


async def test_unknown_emails_cost_a_full_verification() -> None:
    """Time is the leak: an unknown email must not answer faster than a wrong password."""
    passwords = Passwords(Argon2Settings(time_cost=2, memory_kib=32768))
    stored = await passwords.hash("the real password")

    async def timed(stored_hash: str | None) -> float:
        started = time.perf_counter()
        assert not await passwords.verify(stored_hash, "a wrong password")
        return time.perf_counter() - started

    known = statistics.median([await timed(stored) for _ in range(7)])
    unknown = statistics.median([await timed(None) for _ in range(7)])
    assert unknown > 0.5 * known
    assert known > 0.005, "the hash is expensive enough for timing to matter"


def test_create_admin_from_the_command_line(settings: Settings) -> None:
    assert settings.urls.database
    email = unique_email("cli-admin")
    env = {
        "PATH": os.environ["PATH"],
        "PAPO_DATABASE_URL": settings.urls.database,
        "PAPO_ARGON2_TIME_COST": "1",
        "PAPO_ARGON2_MEMORY_KIB": "8192",
    }
    command = [
        sys.executable,
        "-m",
        "papo.server.cli",
        "users",
        "create-admin",
        "--email",
        email,
        "--password-stdin",
    ]
    created = subprocess.run(
        command,
        input="an admin passphrase\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert created.returncode == 0, created.stderr
    assert email in created.stdout
    duplicate = subprocess.run(
        command,
        input="an admin passphrase\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert duplicate.returncode == 1
    assert "email_taken" in duplicate.stderr
    weak = subprocess.run(
        [*command[:-2], unique_email(), "--password-stdin"],
        input="short\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert weak.returncode == 1
    assert "password" in weak.stderr


async def test_the_cli_admin_can_administer(http: httpx.AsyncClient, settings: Settings) -> None:
    assert settings.urls.database
    email = unique_email("cli-admin2")
    process = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "papo.server.cli", "users", "create-admin", "--email", email],
        env={
            "PATH": os.environ["PATH"],
            "PAPO_DATABASE_URL": settings.urls.database,
            "PAPO_ADMIN_PASSWORD": "an admin passphrase",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert process.returncode == 0, process.stderr
    login = await http.post(
        "/api/auth/login", json={"email": email, "password": "an admin passphrase"}
    )
    token = login.json()["access_token"]
    users = await http.get("/api/users", headers={"authorization": f"Bearer {token}"})
    assert users.status_code == 200
