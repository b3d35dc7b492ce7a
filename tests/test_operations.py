"""/healthz, /readyz and /metrics against a real server and real services."""

from __future__ import annotations

import dataclasses
import socket

import httpx
from prometheus_client.parser import text_string_to_metric_families

from papo.server.app import create_app
from papo.server.config import Settings
from papo.server.runner import start_in_loop


async def test_healthz_answers_without_touching_services(http: httpx.AsyncClient) -> None:
    response = await http.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


async def test_readyz_reports_every_configured_service(http: httpx.AsyncClient) -> None:
    response = await http.get("/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["failing"] == []
    assert set(body["services"]) == {"database", "redis", "mongo", "s3"}
    assert all(service["ok"] for service in body["services"].values())


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_readyz_is_503_naming_an_unreachable_database(base_settings: Settings) -> None:
    unreachable = base_settings.with_urls(
        database=f"postgresql://papo@127.0.0.1:{_closed_port()}/papo"
    )
    unreachable = dataclasses.replace(unreachable, readiness_timeout=1.0)
    running = await start_in_loop(create_app(unreachable), unreachable)
    try:
        async with httpx.AsyncClient(base_url=running.url) as client:
            ready = await client.get("/readyz")
            alive = await client.get("/healthz")
    finally:
        await running.stop()
    assert ready.status_code == 503
    body = ready.json()
    assert body["status"] == "unavailable"
    assert body["failing"] == ["database"]
    assert body["services"]["database"]["ok"] is False
    assert body["services"]["database"]["error"]
    assert body["services"]["redis"]["ok"] is True
    assert alive.status_code == 200


async def test_readyz_with_no_services_configured_is_ready() -> None:
    bare = Settings.from_env({"PAPO_PORT": "0"})
    running = await start_in_loop(create_app(bare), bare)
    try:
        async with httpx.AsyncClient(base_url=running.url) as client:
            ready = await client.get("/readyz")
    finally:
        await running.stop()
    assert ready.status_code == 200
    assert ready.json()["services"] == {}


def _samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


async def test_metrics_count_requests_by_route_template(http: httpx.AsyncClient) -> None:
    await http.get("/healthz")
    await http.get("/healthz")
    await http.get("/no/such/page")
    text = (await http.get("/metrics")).text
    requests = _samples(text, "papo_http_requests_total")
    assert requests[(("method", "GET"), ("route", "/healthz"), ("status", "200"))] == 2
    assert requests[(("method", "GET"), ("route", "unmatched"), ("status", "404"))] == 1
    assert _samples(text, "process_resident_memory_bytes")


async def test_request_ids_are_issued_or_echoed(http: httpx.AsyncClient) -> None:
    issued = await http.get("/healthz")
    assert issued.headers["x-request-id"].startswith("req_")
    echoed = await http.get("/healthz", headers={"x-request-id": "trace-42"})
    assert echoed.headers["x-request-id"] == "trace-42"
    unsafe = await http.get("/healthz", headers={"x-request-id": "bad id\twith spaces"})
    assert unsafe.headers["x-request-id"].startswith("req_")


async def test_unknown_paths_get_the_error_shape(http: httpx.AsyncClient) -> None:
    response = await http.get("/nowhere")
    assert response.status_code == 404
    assert response.json() == {"error": {"code": "not_found", "message": "Not Found"}}
    wrong_method = await http.post("/healthz")
    assert wrong_method.status_code == 405
    assert wrong_method.json()["error"]["code"] == "method_not_allowed"


async def test_the_home_page_is_served(http: httpx.AsyncClient) -> None:
    response = await http.get("/")
    assert response.status_code == 200
    assert "papo" in response.text
