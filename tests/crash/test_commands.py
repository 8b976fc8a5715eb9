"""Crash consistency of every command (CrashMonkey / Ace workloads; TESTING.md item 5).

Workloads of 1-3 operations over the fixed file set of tests/crash/workloads.py
are recorded on a RecordingDevice; every crash state of the recording must open,
check clean (`check -n`) and show the tree exactly as after the commands whose
commit reached the medium, the command in flight all or nothing
(tests/crash/harness.py). Default run: every operation alone, a seeded sample of
two- and three-operation workloads, `format --source`. The full sweep (more
variants of every epoch, every state reopened writable, larger seeded samples of
two- and three-operation workloads; ~10 minutes on 2 cores) and the exhaustive
one (every ordered pair of operations, 480 triples; hours):

    make crash              # BFS_CRASH_FULL=1 pytest tests/crash; prints the count at the end
    make crash-exhaustive   # BFS_CRASH_EXHAUSTIVE=1 as well
"""

from __future__ import annotations

import stat

import pytest

from bfs_tools.io.crash import CrashLimits

from . import workloads as W
from .conftest import EXHAUSTIVE, FULL
from .harness import (
    Cmd,
    CrashFailure,
    check_recording,
    formatted_device,
    record,
    states_of,
)

LIMITS = CrashLimits(prefixes=4, drops=3, subsets=4, torn=3)
FULL_LIMITS = CrashLimits(prefixes=8, drops=6, subsets=8, torn=6)
OPS = [c.name for c in W.operations()]


def _check(cmds, count_states, *, seed: int, limits=LIMITS, reopen=None) -> None:
    rec = record(W.workload_name(cmds), W.base_image(), cmds, seed=seed)
    if reopen is None:
        reopen = True if FULL else (lambda n: n % 2 == 0)
    st = check_recording(rec, seed=seed, limits=limits, reopen=reopen)
    count_states(st.states)
    assert st.states > 0


def test_every_operation_does_something():
    """Each operation alone succeeds and changes the tree, in one commit (snapshot
    delete: the unlink, its cleanup batches and the tree rewrite, then close)."""
    base = W.base_image()
    for c in W.operations():
        rec = record(c.name, base, [c])
        d = rec.done[0]
        assert d.rc == 0, (c.name, d.err)
        assert rec.models[1] != rec.models[0], c.name
        assert len(d.commits) == (4 if c.name.endswith("-delete") else 1), (c.name, d.commits)


@pytest.mark.parametrize("op", OPS)
def test_one_operation(op, count_states):
    _check([W.by_name()[op]], count_states, seed=OPS.index(op),
           limits=FULL_LIMITS if FULL else LIMITS)


SAMPLE_2 = W.sample(2, 16, seed=2)
SAMPLE_3 = W.sample(3, 6, seed=3)


@pytest.mark.parametrize("i", range(len(SAMPLE_2)),
                         ids=[W.workload_name(w) for w in SAMPLE_2])
def test_two_operations_sample(i, count_states):
    _check(SAMPLE_2[i], count_states, seed=100 + i)


@pytest.mark.parametrize("i", range(len(SAMPLE_3)),
                         ids=[W.workload_name(w) for w in SAMPLE_3])
def test_three_operations_sample(i, count_states):
    _check(SAMPLE_3[i], count_states, seed=200 + i)


@pytest.mark.parametrize("over,tree,entries", [("empty", "src", 7), ("old", "src", 7),
                                                ("empty", "huge", W.HUGE + 7)])
def test_format_source(over, tree, entries, count_states):
    """`format --source` from an empty device, and over an old filesystem: a crash
    leaves no filesystem (or the old one, intact) or the new one complete. The
    huge tree (600 files) is one bulk import: its btrees are built bottom-up."""
    base = W.empty_device() if over == "empty" else W.base_image()
    rec = record(f"format-{over}", base, [W.format_source(tree)])
    assert rec.done[0].rc == 0, rec.done[0].err
    assert len(rec.models[1]["tree"]) == entries   # / and every copied entry
    st = check_recording(rec, seed=7, limits=FULL_LIMITS, reopen=True)
    count_states(st.states)
    assert st.outcomes.get("after 1"), st.outcomes


def test_put_bulk_import(count_states):
    """`put -r` of 600 files into a fresh image: one unjournalled transaction
    that builds the btrees bottom-up, committed by the command's close."""
    put = W.cli("put-huge", "put", "-r", "IMG", W.h("huge"), "/huge")
    rec = record("put-huge", formatted_device(), [put])
    assert rec.done[0].rc == 0, rec.done[0].err
    st = check_recording(rec, seed=8, limits=FULL_LIMITS, reopen=True)
    count_states(st.states)
    assert st.outcomes.get("after 1"), st.outcomes


AFTER_CRASH = W.sample(2, 64 if FULL else 8, seed=4)


@pytest.mark.parametrize("i", range(len(AFTER_CRASH)),
                         ids=[W.workload_name(w) for w in AFTER_CRASH])
def test_crash_then_next_command(i, count_states):
    """A crash in the first command, then the second runs on the crashed image
    (its writable open recovers: replay, blacklist, the recovery's own commit;
    an interrupted snapshot deletion is finished): every crash state of the
    second command shows the crashed image's tree or the second command done."""
    import random

    first, second = AFTER_CRASH[i]
    rec = record(first.name, W.base_image(), [first], seed=i)
    states = [(s, d) for s, d in states_of(rec, seed=i, limits=LIMITS)
              if s.kind != "flush-prefix"]
    total = 0
    for state, dev in random.Random(i).sample(states, min(6 if FULL else 2, len(states))):
        rec2 = record(f"{first.name} crashed ({state.describe()}), then {second.name}", dev,
                      [second], seed=i)
        total += check_recording(rec2, seed=i, limits=LIMITS,
                                 reopen=True if FULL else (lambda n: n % 2 == 0)).states
    count_states(total)
    assert total > 0


def test_harness_catches_a_command_that_is_not_atomic(count_states):
    """The oracle works: a command that commits halfway (two creates with a commit
    point between them) shows a state that is neither before nor after it."""

    def two_steps(fs):
        root = fs.root()
        fs.create(root, b"first", stat.S_IFREG | 0o644, data=b"1")
        fs.store.commit()
        fs.create(root, b"second", stat.S_IFREG | 0o644, data=b"2")

    rec = record("not-atomic", W.base_image(), [Cmd("two-steps", api=two_steps)])
    with pytest.raises(CrashFailure, match="not the one after"):
        check_recording(rec, limits=CrashLimits(prefixes=0, drops=0, subsets=0, torn=0))


# ---------------------------------------------------------------------- full sweeps

CHUNKS = 16


def _pairs() -> list[list[Cmd]]:
    """Every ordered pair of operations (Ace's seq-2) when exhaustive; else a seeded
    sample of 160 of them."""
    return W.sequences(2) if EXHAUSTIVE else W.sample(2, 160, seed=22)


def _triples() -> list[list[Cmd]]:
    return W.sample(3, 480 if EXHAUSTIVE else 48, seed=33)


def _sweep(workloads: list[list[Cmd]], chunk: int) -> int:
    total = 0
    for i, cmds in enumerate(workloads):
        if i % CHUNKS == chunk:
            rec = record(W.workload_name(cmds), W.base_image(), cmds, seed=i)
            total += check_recording(rec, seed=i, limits=LIMITS,
                                     reopen=lambda n: n % 3 == 0).states
    return total


@pytest.mark.slow
@pytest.mark.skipif(not FULL, reason="full crash sweep: set BFS_CRASH_FULL=1 (make crash)")
@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_two_operations_sweep(chunk, count_states):
    """Two-operation workloads (all of them with BFS_CRASH_EXHAUSTIVE=1), in chunks
    for xdist."""
    count_states(_sweep(_pairs(), chunk))


@pytest.mark.slow
@pytest.mark.skipif(not FULL, reason="full crash sweep: set BFS_CRASH_FULL=1 (make crash)")
@pytest.mark.parametrize("chunk", range(CHUNKS))
def test_three_operations_sweep(chunk, count_states):
    """A seeded sample of three-operation workloads (48; 480 exhaustive)."""
    count_states(_sweep(_triples(), chunk))
