"""The benchmark's sizes, changed from the command line (``--size s4.seconds=40``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from bench.run import FULL, resized

ROOT = Path(__file__).resolve().parents[1]


def test_a_size_changes_only_the_scenario_and_key_named() -> None:
    sizes = resized(FULL, ["s4.seconds=40", "s4.repeats=1", "s2.rate=2.5"])

    assert sizes["s4"] == {**FULL["s4"], "seconds": 40, "repeats": 1}
    assert sizes["s2"]["rate"] == 2.5
    assert sizes["s1"] == FULL["s1"]
    assert FULL["s4"]["seconds"] == 15  # the defaults are left as they were


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ("s4.secs=40", "no size 's4.secs'; sizes: s1.subscribers, s1.warmup"),
        ("s9.seconds=1", "no size 's9.seconds'; sizes: s1.subscribers, s1.warmup"),
        ("s4.seconds=forty", "'forty' is not a number"),
        ("s4.seconds=0", "sizes are positive"),
    ],
)
def test_a_size_that_does_not_exist_or_is_not_a_number_stops_the_run(
    change: str, says: str
) -> None:
    # --rows names no row: were the size let through, the run would still stop at once.
    run = subprocess.run(
        [sys.executable, "-m", "bench.run", "--size", change, "--rows", "no such row"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert run.returncode == 2
    assert f"--size {change!r}: {says}" in run.stderr
