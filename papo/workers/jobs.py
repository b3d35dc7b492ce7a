"""Job functions. arq finds them by ``__qualname__``, so they live at module level."""

from __future__ import annotations

import time
from typing import Any


async def probe(ctx: dict[str, Any], payload: str) -> dict[str, Any]:
    """Round-trip through the queue: proves a worker consumes jobs (ops checks, tests)."""
    return {"payload": payload, "worker": ctx.get("worker_name"), "at": time.time()}
