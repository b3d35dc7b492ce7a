"""Prometheus metrics, on one registry per app (no module globals).

Two apps in one process (tests, several nodes) keep separate counters, and ``/metrics``
shows exactly what this node did.
"""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.http_requests = Counter(
            "papo_http_requests_total",
            "HTTP requests answered, by method, route template and status code.",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self.http_duration = Histogram(
            "papo_http_request_duration_seconds",
            "Time from request start to the last body byte, by method and route template.",
            ("method", "route"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.http_in_flight = Gauge(
            "papo_http_requests_in_flight",
            "HTTP requests being answered right now.",
            registry=self.registry,
        )
        self.api_errors = Counter(
            "papo_api_errors_total",
            "REST requests answered with an error, by stable error code.",
            ("code",),
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "papo_rate_limited_total",
            "Requests refused by a rate limit, by limit name.",
            ("limit",),
            registry=self.registry,
        )
        self.readiness = Gauge(
            "papo_service_up",
            "1 when the last readiness check reached the service, else 0.",
            ("service",),
            registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
