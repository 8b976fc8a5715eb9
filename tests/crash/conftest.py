"""Crash tests: count the crash states checked and print the total at the end.

A test reports its count with the `count_states` fixture (`count_states(n)`);
the count travels with the test report (also from xdist workers) and the
terminal summary prints the total: `make crash` ends with
"crash consistency: N crash states checked".
"""

from __future__ import annotations

import os

import pytest

FULL = os.environ.get("BFS_CRASH_FULL") == "1"
# every ordered pair of operations and 480 triples (hours on 2 cores): make crash-exhaustive
EXHAUSTIVE = os.environ.get("BFS_CRASH_EXHAUSTIVE") == "1"

_TOTAL = {"states": 0, "tests": 0}


@pytest.fixture
def count_states(request):
    def count(n: int) -> None:
        request.node.user_properties.append(("crash_states", n))
    return count


def pytest_runtest_logreport(report):
    if report.when != "call":
        return
    n = sum(v for k, v in report.user_properties if k == "crash_states")
    if n:
        _TOTAL["states"] += n
        _TOTAL["tests"] += 1


def pytest_terminal_summary(terminalreporter):
    if _TOTAL["tests"]:
        terminalreporter.write_line(
            f"crash consistency: {_TOTAL['states']} crash states checked in "
            f"{_TOTAL['tests']} tests"
            + (" (exhaustive sweep)" if EXHAUSTIVE else " (full sweep)" if FULL else ""))
