"""The Compose file is valid against the Compose specification and runs papo whole."""

from __future__ import annotations

import importlib.resources
import re
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest
import yaml

ROOT = Path(__file__).parents[1]
PAPO_SERVICES = ("papo", "worker")
REQUIRED_ENV = (
    "PAPO_DATABASE_URL",
    "PAPO_REDIS_URL",
    "PAPO_MONGO_URL",
    "PAPO_S3_URL",
    "PAPO_JWT_SECRET",
)
SECRET_NAME = re.compile(r"(PASSWORD|SECRET|TOKEN)")
REQUIRED_INTERPOLATION = re.compile(r"\$\{[A-Z0-9_]+:\?[^}]*\}")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return document


def test_compose_file_follows_the_compose_specification(compose: dict[str, Any]) -> None:
    schema_file = importlib.resources.files("check_jsonschema.builtin_schemas.vendor").joinpath(
        "compose-spec.json"
    )
    schema = orjson.loads(schema_file.read_bytes())
    jsonschema.validate(compose, schema, cls=jsonschema.Draft7Validator)


def test_every_backing_service_papo_needs_is_defined(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("papo", "worker", "postgres", "redis", "mongo", "minio"):
        assert name in services, name
    for name in PAPO_SERVICES:
        environment = services[name]["environment"]
        for variable in REQUIRED_ENV:
            assert variable in environment, f"{name} lacks {variable}"
    hosts = {
        "postgres": "@postgres:",
        "redis": "//redis:",
        "mongo": "//mongo:",
        "minio": "//minio:",
    }
    urls = " ".join(str(v) for v in services["papo"]["environment"].values())
    for service, host in hosts.items():
        assert host in urls, f"papo does not reach {service}"


def test_long_running_services_have_healthchecks(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if service.get("restart") == "no":
            continue
        assert "healthcheck" in service, name


def test_no_secret_is_committed(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for variable, value in (service.get("environment") or {}).items():
            if SECRET_NAME.search(variable):
                assert REQUIRED_INTERPOLATION.fullmatch(str(value)), (name, variable)
    assert "change-me" not in (ROOT / "docker-compose.yml").read_text()


def test_the_image_installs_from_the_lock_file() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "requirements-prod.lock" in dockerfile
    locked = (ROOT / "requirements-prod.lock").read_text()
    for package in ("starlette", "uvicorn", "asyncpg", "pymongo", "redis", "arq"):
        assert re.search(rf"^{package}==", locked, re.MULTILINE), package
