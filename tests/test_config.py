"""Settings come from PAPO_* variables; bad values name the variable and stop start-up."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from papo.server.config import ConfigError, Settings


def test_defaults_need_no_environment() -> None:
    settings = Settings.from_env({})
    assert settings.http.host == "127.0.0.1"
    assert settings.http.port == 8000
    assert settings.urls.configured() == {}
    assert settings.log.level == "INFO"
    assert settings.log.format == "json"


def test_every_documented_variable_is_read() -> None:
    settings = Settings.from_env(
        {
            "PAPO_HOST": "0.0.0.0",
            "PAPO_PORT": "9001",
            "PAPO_DATABASE_URL": "postgresql://u:p@db:5432/papo",
            "PAPO_REDIS_URL": "redis://cache:6379/0",
            "PAPO_MONGO_URL": "mongodb://mongo:27017/papo",
            "PAPO_S3_URL": "http://minio:9000",
            "PAPO_JWT_SECRET": "x" * 40,
            "PAPO_LOG_LEVEL": "debug",
            "PAPO_LOG_FORMAT": "text",
        }
    )
    assert settings.http.port == 9001
    assert settings.urls.configured() == {
        "database": "postgresql://u:p@db:5432/papo",
        "redis": "redis://cache:6379/0",
        "mongo": "mongodb://mongo:27017/papo",
        "s3": "http://minio:9000",
    }
    assert settings.log.level == "DEBUG"
    assert settings.log.format == "text"
    assert settings.auth.jwt_secret == "x" * 40


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("PAPO_PORT", "abc", "an integer from 0 to 65535"),
        ("PAPO_PORT", "70000", "an integer from 0 to 65535"),
        ("PAPO_LOG_LEVEL", "loud", "one of DEBUG, INFO"),
        ("PAPO_DATABASE_URL", "mysql://x", "postgresql://"),
        ("PAPO_REDIS_URL", "localhost:6379", "redis://"),
        ("PAPO_MONGO_URL", "http://x", "mongodb://"),
        ("PAPO_S3_URL", "s3://bucket", "http://"),
        ("PAPO_DATABASE_URL", "postgresql://db:notaport/papo", "postgresql://"),
        ("PAPO_READINESS_TIMEOUT", "0", "a number from 0.1 to 60"),
    ],
)
def test_bad_values_name_variable_value_and_expectation(
    variable: str, value: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({variable: value})
    message = str(caught.value)
    assert caught.value.variable == variable
    assert variable in message
    assert repr(value) in message
    assert expected in message


def test_a_short_secret_is_refused_without_echoing_it() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"PAPO_JWT_SECRET": "hunter2"})
    assert "PAPO_JWT_SECRET" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def _papo(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "papo.server.cli", *args],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_serve_with_a_bad_port_exits_2_with_one_line_naming_it() -> None:
    result = _papo("serve", env={"PAPO_PORT": "abc"})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "PAPO_PORT" in lines[0]
    assert "'abc'" in lines[0]


def test_migrate_without_a_database_url_exits_2() -> None:
    result = _papo("migrate", "status", env={})
    assert result.returncode == 2
    assert "PAPO_DATABASE_URL" in result.stderr


@pytest.mark.parametrize(
    "command",
    [
        [],
        ["serve"],
        ["dev"],
        ["worker"],
        ["migrate"],
        ["migrate", "up"],
        ["migrate", "down"],
        ["migrate", "status"],
        ["users"],
        ["users", "create-admin"],
    ],
)
def test_every_command_has_help(command: list[str]) -> None:
    result = _papo(*command, "--help", env={})
    assert result.returncode == 0
    assert "usage: papo" in result.stdout


def test_env_example_documents_every_variable_papo_reads() -> None:
    root = Path(__file__).parents[1]
    documented = {
        line.split("=", 1)[0].lstrip("# ").strip()
        for line in (root / ".env.example").read_text().splitlines()
        if "PAPO_" in line.split("=", 1)[0]
    }
    source = "\n".join(p.read_text() for p in (root / "papo").rglob("*.py"))
    read = set(re.findall(r'"(PAPO_[A-Z0-9_]+)"', source))
    assert read - documented == set()
