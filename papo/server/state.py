"""What every request handler may reach: built once per app, never a module global."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.requests import HTTPConnection

from papo.server.config import Settings
from papo.server.metrics import Metrics
from papo.server.resources import Resources


@dataclass(slots=True)
class AppState:
    settings: Settings
    metrics: Metrics
    resources: Resources


def app_state(connection: HTTPConnection) -> AppState:
    state: AppState = connection.app.state.papo
    return state
