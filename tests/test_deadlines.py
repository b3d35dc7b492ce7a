"""The node's one timer for every connection's keepalive and token expiry."""

from __future__ import annotations

import asyncio
import gc
import itertools
import logging
from collections.abc import Callable

import pytest

from papo.hub.deadlines import TURN_OWNERS, Deadlines

RESOLUTION = 0.02


class Owner:
    """Something with a deadline: records when it came due."""

    def __init__(self, name: str, log: list[tuple[str, float]]) -> None:
        self.name = name
        self.deadline_slot: int | None = None
        self._log = log
        self.then: Callable[[], None] | None = None

    def deadline_due(self) -> None:
        self._log.append((self.name, asyncio.get_running_loop().time()))
        if self.then is not None:
            self.then()


async def _settle(deadlines: Deadlines, seconds: float) -> None:
    await asyncio.sleep(seconds + 2 * RESOLUTION)


async def test_each_deadline_comes_once_in_order_and_never_early() -> None:
    deadlines = Deadlines(RESOLUTION)
    fired: list[tuple[str, float]] = []
    loop = asyncio.get_running_loop()
    started = loop.time()
    delays = {"c": 0.15, "a": 0.05, "b": 0.1, "d": 0.0}
    for name, delay in delays.items():
        deadlines.set_in(Owner(name, fired), delay)
    assert len(deadlines) == 4
    await _settle(deadlines, 0.15)
    assert [name for name, _ in fired] == ["d", "a", "b", "c"]
    for name, at in fired:
        late = at - started - delays[name]
        assert -0.002 <= late <= RESOLUTION + 0.05, (name, late)
    assert len(deadlines) == 0


async def test_a_new_deadline_replaces_the_old_and_a_cancelled_one_never_comes() -> None:
    deadlines = Deadlines(RESOLUTION)
    fired: list[tuple[str, float]] = []
    moved, cancelled, kept = Owner("moved", fired), Owner("cancelled", fired), Owner("kept", fired)
    deadlines.set_in(moved, 0.02)
    deadlines.set_in(cancelled, 0.02)
    deadlines.set_in(kept, 0.04)
    deadlines.set_in(moved, 0.08)  # later than it was: the first one is gone
    deadlines.cancel(cancelled)
    deadlines.cancel(cancelled)  # twice is harmless
    await _settle(deadlines, 0.08)
    assert [name for name, _ in fired] == ["kept", "moved"]


async def test_an_owner_cancelled_by_another_in_the_same_slot_is_not_called() -> None:
    deadlines = Deadlines(RESOLUTION)
    fired: list[tuple[str, float]] = []
    first, second, third = (Owner(n, fired) for n in ("first", "second", "third"))
    first.then = lambda: deadlines.cancel(second)
    second.then = lambda: deadlines.cancel(first)
    third.then = lambda: deadlines.set_in(third, 0.03) if len(fired) < 3 else None
    for owner in (first, second, third):
        deadlines.set_in(owner, 0.03)
    await _settle(deadlines, 0.1)
    names = [name for name, _ in fired]
    # Whichever of the first two ran cancelled the other; the third set itself again.
    assert names.count("first") + names.count("second") == 1
    assert names.count("third") == 2


async def test_a_handler_that_fails_does_not_stop_the_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    deadlines = Deadlines(RESOLUTION)
    fired: list[tuple[str, float]] = []
    broken, fine, later = Owner("broken", fired), Owner("fine", fired), Owner("later", fired)

    def fail() -> None:
        raise RuntimeError("handler failed")

    broken.then = fail
    deadlines.set_in(broken, 0.02)
    deadlines.set_in(fine, 0.02)
    deadlines.set_in(later, 0.06)
    with caplog.at_level(logging.ERROR, logger="papo.hub"):
        await _settle(deadlines, 0.06)
    assert sorted(name for name, _ in fired) == ["broken", "fine", "later"]
    assert "a deadline's handler failed" in caplog.text


async def test_closed_deadlines_call_nobody() -> None:
    deadlines = Deadlines(RESOLUTION)
    fired: list[tuple[str, float]] = []
    owner = Owner("owner", fired)
    deadlines.set_in(owner, 0.02)
    deadlines.close()
    await _settle(deadlines, 0.05)
    assert fired == []
    assert owner.deadline_slot is None
    # Closed halfway through a burst: the rest of it is not handled either.
    deadlines = Deadlines(RESOLUTION)
    burst = [Owner(str(n), fired) for n in range(3 * TURN_OWNERS)]
    begun = asyncio.Event()
    burst[0].then = begun.set
    for one in burst:
        deadlines.set_in(one, 0.02)
    await begun.wait()  # woken between the burst's first turn and its second
    deadlines.close()
    handled = len(fired)
    await _settle(deadlines, 0.05)
    assert len(fired) == handled < len(burst)
    assert all(one.deadline_slot is None for one in burst)


async def test_a_thousand_deadlines_cost_one_loop_timer() -> None:
    """What the module is for: per owner, a dict entry, not a timer and its objects."""
    deadlines = Deadlines(RESOLUTION)
    fired: list[tuple[str, float]] = []
    owners = [Owner(str(n), fired) for n in range(1000)]

    def timers() -> int:
        return sum(1 for o in gc.get_objects() if type(o).__name__ == "TimerHandle")

    before = timers()
    for n, owner in enumerate(owners):
        deadlines.set_in(owner, 0.05 + (n % 5) * 0.01)
    assert timers() - before <= 1
    await _settle(deadlines, 0.09)
    assert len(fired) == 1000


async def test_deadlines_due_together_leave_the_loop_turns_between_them() -> None:
    """Clients that connected together get their pings together: thousands at once must
    not hold up every other callback until the last is handled."""
    deadlines = Deadlines(RESOLUTION)
    fired: list[tuple[str, float]] = []
    owners = [Owner(str(n), fired) for n in range(5 * TURN_OWNERS)]
    for owner in owners:
        deadlines.set_in(owner, 0.03)
    deadlines.cancel(owners[-1])
    seen: list[int] = []
    while len(fired) < len(owners) - 1:
        seen.append(len(fired))
        await asyncio.sleep(0)
    # Other callbacks ran while only part of them had been handled.
    assert any(0 < count < len(owners) - 1 for count in seen)
    assert max(b - a for a, b in itertools.pairwise(seen)) <= TURN_OWNERS
    await asyncio.sleep(2 * RESOLUTION)
    assert len(fired) == len(owners) - 1
    assert len(deadlines) == 0
