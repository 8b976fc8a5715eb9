"""Random fuzzing (TESTING.md item 4): a few hundred seeded cases by default,
10,000 with BFS_FUZZ_FULL=1 (`make fuzz`). See randfuzz.py for the oracle."""

from __future__ import annotations

import os

import pytest

from tests.fuzz import fieldfuzz, randfuzz

FULL = os.environ.get("BFS_FUZZ_FULL") == "1"
START = int(os.environ.get("BFS_FUZZ_SEED", "0"))
COUNT = 10000 if FULL else int(os.environ.get("BFS_FUZZ_RANDOM", "300"))
SEEDS = range(START, START + COUNT)


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    return fieldfuzz.Bases(tmp_path_factory.mktemp("randfuzz"))


@pytest.mark.damaged
@pytest.mark.parametrize("seed", SEEDS)
def test_random(seed, bases, tmp_path):
    case = randfuzz.make_case(seed, bases)
    problems = randfuzz.run_case(case, bases, tmp_path)
    assert not problems, (f"{case.target} {case.flips}: minimise and keep it with "
                          f"`python -m tests.fuzz.randfuzz --seeds {seed}:{seed + 1} --keep`\n"
                          + "\n".join(problems))
