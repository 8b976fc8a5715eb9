"""Interrupted repair (FAST'18 "Towards robust file system checkers": interrupting fsck).

For every damaged image of the golden corpus (fixtures/fsck, one corruption
class each, made by tests/fsck/make_corpus.py), `check -y` runs through the API
on a RecordingDevice. Then, for every crash state of that repair's writes
(flush prefixes, dropped, reordered and torn writes), `check -y` is run again
(at most twice, TESTING.md's "converge"): a following `check -n` must report
nothing at all, and the tree (paths, types, modes, contents, links, xattrs,
subvolumes) must equal what the uninterrupted repair left: an interruption may
not lose anything the repair would have kept.

    BFS_CRASH_FULL=1 pytest tests/crash/test_repair.py    # more variants per epoch
"""

from __future__ import annotations

import lzma
from pathlib import Path

import pytest

from bfs_tools.io.crash import CrashLimits, crash_states
from bfs_tools.io.device import MemoryDevice, RecordingDevice
from tests.fsck import lib
from tests.fsck.make_corpus import FIXTURES

from .conftest import FULL
from .harness import check_n, check_y, diff, model_of

DIRS = sorted(p for p in FIXTURES.glob("[0-9][0-9][0-9]-*") if p.is_dir())
LIMITS = (CrashLimits(prefixes=6, drops=4, subsets=6, torn=4) if FULL
          else CrashLimits(prefixes=2, drops=1, subsets=2, torn=1))


def load(fixture: Path) -> tuple[MemoryDevice, tuple[str, ...]]:
    data = lzma.open(fixture / "image.xz").read()
    dev = MemoryDevice(len(data))
    dev.write(0, data)
    args = tuple((fixture / "args").read_text().split()) if (fixture / "args").exists() else ()
    return dev, args


def repair(dev, args) -> list[int]:
    """check -y until check -n is clean (at most twice): the exit codes."""
    codes = []
    for _ in range(2):
        with lib.deterministic(lib.EXPECT_SEED):
            rc, _findings = check_y(dev, args)
        codes.append(rc)
        if not check_n(dev, strict=True):
            return codes
    raise AssertionError(f"check -y did not converge ({codes}): check -n reports "
                         f"{check_n(dev, strict=True)}")


@pytest.mark.parametrize("fixture", DIRS, ids=[p.name for p in DIRS])
def test_interrupted_repair(fixture: Path, count_states):
    base, args = load(fixture)
    rec = RecordingDevice(base.clone())
    with lib.deterministic(lib.EXPECT_SEED):
        rc, _ = check_y(rec, args)
    assert rc in (0, 1)
    assert check_n(rec.inner, strict=True) == []
    want = model_of(rec.inner, times=False)
    n = 0
    for state, dev in crash_states(base, rec.log, seed=len(rec.log), limits=LIMITS):
        what = f"{fixture.name}: repair interrupted: {state.describe()}"
        try:
            repair(dev, args)
            got = model_of(dev, times=False)
        except Exception as e:
            raise AssertionError(f"{what}: {type(e).__name__}: {e}") from e
        assert got == want, f"{what}: after repairing again: {diff(got, want)}"
        n += 1
    count_states(n)
    assert n >= 5
