"""Stopping background tasks for sure, so that stopping papo never waits forever.

A task's ``cancel()`` is a request, and a library can lose it. redis-py 5 on Python
3.11 does, for a cancellation that lands at the wrong moment of a command: it sends
through ``asyncio.wait_for`` (which, before 3.12, returns a result that arrives with
the cancellation and drops the cancellation) and checks pooled connections with a
zero-timeout hiredis read that loses it too. The command returns normally and the loop
that called it goes on; measured, a single ``cancel()`` of presence's upkeep left 51 of
100 stops waiting forever. ``stop_task`` asks again every 0.1 s while the task runs on,
and after ``patience`` seconds leaves it behind with a warning that names it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Iterable
from typing import Any

log = logging.getLogger("papo.hub")

RECANCEL_SECONDS = 0.1
PATIENCE_SECONDS = 5.0


async def stop_task(task: asyncio.Task[Any], patience: float = PATIENCE_SECONDS) -> bool:
    """Cancel ``task`` until it ends or ``patience`` runs out; True if it ended.

    Its outcome is collected: an error it ended with is logged, never left for the
    loop to report as "never retrieved"."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    while not task.done():
        remaining = deadline - loop.time()
        if remaining <= 0:
            log.warning(
                "task did not stop when cancelled; left behind", extra={"task": task.get_name()}
            )
            return False
        task.cancel()
        await asyncio.wait({task}, timeout=min(RECANCEL_SECONDS, remaining))
    if not task.cancelled() and (error := task.exception()) is not None:
        log.warning(
            "task ended with an error", extra={"task": task.get_name(), "error": repr(error)}
        )
    return True


async def stop_tasks(
    tasks: Iterable[asyncio.Task[Any]], patience: float = PATIENCE_SECONDS
) -> None:
    """``stop_task`` for several at once: the patience is shared, not summed."""
    await asyncio.gather(*(stop_task(task, patience) for task in list(tasks)))


async def shutdown_step(step: Awaitable[object], seconds: float, what: str) -> None:
    """Run one step of stopping papo for at most ``seconds``. A step that overruns is
    stopped and one that fails is logged; either way the next step still runs, so a
    backing service that stopped answering cannot keep the others from being closed."""
    task = asyncio.ensure_future(step)
    done, _ = await asyncio.wait({task}, timeout=seconds)
    if not done:
        log.warning("shutdown step overran; skipped", extra={"step": what, "seconds": seconds})
        await stop_task(task)
    elif not task.cancelled() and (error := task.exception()) is not None:
        log.warning("shutdown step failed", extra={"step": what, "error": repr(error)})
