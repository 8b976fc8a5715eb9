"""Field fuzzing (TESTING.md item 3): a seeded slice by default, every case with
BFS_FUZZ_FULL=1 (`make fuzz`). See fieldfuzz.py for the cases and the oracle."""

from __future__ import annotations

import os
import random

import pytest

from tests.fuzz import fieldfuzz

FULL = os.environ.get("BFS_FUZZ_FULL") == "1"
SEED = int(os.environ.get("BFS_FUZZ_SEED", "1"))
SLICE = int(os.environ.get("BFS_FUZZ_FIELDS", "60"))

ALL = fieldfuzz.cases()
CASES = ALL if FULL else random.Random(SEED).sample(ALL, min(SLICE, len(ALL)))


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    return fieldfuzz.Bases(tmp_path_factory.mktemp("fieldfuzz"))


def test_every_structure_is_fuzzed():
    """Superblock, layout, node, bset, jset and key headers and every value type."""
    structs = {s.struct for s in fieldfuzz.SITES}
    assert {"SuperblockHeader", "LayoutRecord", "NodeHeader", "BsetHeader", "JsetHeader",
            "KeyHeader", "InodeValue", "DirentValue", "XattrValue", "ExtentValue",
            "ReflinkPValue", "ReflinkVValue", "SnapshotValue", "SnapshotTreeValue",
            "SubvolumeValue", "AllocValue", "BtreePtrValue"} <= structs
    assert len(ALL) == len({c.name for c in ALL})


@pytest.mark.damaged
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_field(case, bases, tmp_path):
    problems = fieldfuzz.run_case(case, bases, tmp_path)
    assert not problems, "\n".join(problems)
