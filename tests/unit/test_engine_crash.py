"""Crash consistency of the storage engine (CrashMonkey / dm-log-writes style).

A workload of many small transactions, each followed by a commit point
(`store.commit()`), then `store.close()`, is recorded on a RecordingDevice over
a small MemoryDevice: 8 KiB btree nodes in 16 KiB buckets (two nodes per
bucket, 1 KiB blocks so bsets get appended), 4 journal buckets (64 KiB ring).
The workload grows the xattrs btree (splits), rewrites keys (appended bsets,
then copy-on-write compaction when they no longer fit), deletes most keys
(merges) and grows again, while the journal ring wraps many times.

Every crash state of the log (bfs_tools.io.crash: every flush prefix, and
subsets, reorderings, drops and torn sectors of the pending writes) must:
  * open (journal replay) read-only and hold exactly the keys of the model
    after the last commit point that reached the medium — all transactions
    of a durable commit visible, the one in flight all or nothing;
  * open writable (recovery made durable) and close; then reopen read-only,
    clean, with the same keys and exact alloc info.

Which commit is expected, from the log: commit c is durable when the FlushOp
after its flush journal entry W_c is before the crash (W_c index < the
state's `durable`); the next commit is in flight when W_c+1 was issued but not
flushed — it counts iff W_c+1 reached the medium intact in the state (the
bytes its checksum covers; its block padding does not matter).

The default run checks every flush prefix and a few seeded variants of every
epoch; BFS_CRASH_FULL=1 adds more variants of every epoch of longer workloads:
    BFS_CRASH_FULL=1 .venv/bin/python -m pytest tests/unit/test_engine_crash.py
"""

from __future__ import annotations

import os
import random
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest

from bfs_tools.errors import BfsError
from bfs_tools.io.crash import CrashLimits, CrashState, crash_states, rebuild, write_intact
from bfs_tools.io.device import FlushOp, MemoryDevice, RecordingDevice, WriteOp
from bfs_tools.journal.entries import JsetHeader
from bfs_tools.journal.writer import Journal
from bfs_tools.store import Store
from tests.engine_checks import (
    EngineCounters,
    X,
    check_alloc_consistency,
    count_engine_events,
    keys_of,
    mkdev,
    xkey,
)

FULL = os.environ.get("BFS_CRASH_FULL") == "1"


@dataclass
class Recording:
    base: MemoryDevice
    log: list
    models: list[dict]                    # models[i]: the key set after i transactions
    commits: list[tuple[int, int]] = field(default_factory=list)  # (log index of W_c, model)
    counters: EngineCounters | None = None
    journal_bytes: int = 0
    ring_bytes: int = 0
    final_root_level: int = 0
    unjournalled: int = 0
    reopens: int = 0

    def expected(self, state: CrashState, dev: MemoryDevice) -> int:
        """Index of the model the crash state must show (see the module docstring)."""
        k = 0
        in_flight = None
        for idx, model in self.commits:
            if idx < state.durable:
                k = model
            elif idx < state.point:
                in_flight = (idx, model)
                break
            else:
                break
        if in_flight is not None:
            idx, model = in_flight
            op = self.log[idx]
            # what the checksum covers: the jset header and its entries (the
            # block padding after them does not matter)
            length = JsetHeader.SIZE + JsetHeader.unpack(op.data).bytes
            if state.reached(idx) and write_intact(dev, op, length):
                k = model
        return k


@contextmanager
def track_commits(rec_dev: RecordingDevice, rec: Recording):
    """Note the log index of every flush journal entry written to `rec_dev`,
    with the model current then (the transactions completed so far)."""
    orig_write_entry = Journal.write_entry

    def write_entry(self, *, flush=False, roots=None):
        seq = orig_write_entry(self, flush=flush, roots=roots)
        if flush and self.dev is rec_dev:
            log = rec_dev.log
            assert isinstance(log[-1], FlushOp) and isinstance(log[-2], WriteOp)
            rec.commits.append((len(log) - 2, len(rec.models) - 1))
        return seq

    Journal.write_entry = write_entry
    try:
        yield
    finally:
        Journal.write_entry = orig_write_entry


def record_workload(ncommits: int, seed: int, *, mixed: bool = False) -> Recording:
    """The workload of the module docstring. `mixed`: 1-4 transactions per
    commit, some large (unjournalled) or explicitly unjournalled, and a clean
    close + reopen now and then."""
    base = mkdev(8 << 20, node=8192, bucket=16384, block=1024)
    rec_dev = RecordingDevice(base.clone())
    rec = Recording(base, rec_dev.log, [{}])
    rng = random.Random(seed)
    model: dict = {}

    def transaction(s, p_del: float, nops: int, journal=None, big: bool = False) -> None:
        t = s.transaction()
        for _ in range(nops):
            if model and rng.random() < p_del:
                pos = rng.choice(sorted(model))
                t.delete(X, pos)
                del model[pos]
            else:
                size = rng.randrange(200, 300) if big else rng.randrange(10, 300)
                k = xkey(rng.randrange(1500), rng.randbytes(size))
                t.update(X, k)
                model[k.pos] = k.val
        t.commit(journal=journal)
        rec.models.append(dict(model))

    with track_commits(rec_dev, rec), count_engine_events() as counters:
        s = Store.open(rec_dev, write=True)
        for i in range(ncommits):
            phase = i / ncommits
            # grow, churn, shrink (merges), grow again
            p_del = 0.05 if phase < 0.4 else 0.4 if phase < 0.55 else 0.95 if phase < 0.8 else 0.2
            if not mixed:
                transaction(s, p_del, rng.randint(1, 10))
            else:
                for _ in range(rng.randint(1, 4)):
                    r = rng.random()
                    if r < 0.05:
                        transaction(s, p_del / 4, rng.randint(70, 100), big=True)
                        rec.unjournalled += 1
                    elif r < 0.10:
                        transaction(s, p_del, rng.randint(1, 10), journal=False)
                        rec.unjournalled += 1
                    else:
                        transaction(s, p_del, rng.randint(1, 10))
            s.commit()
            if mixed and i % 37 == 36:
                rec.journal_bytes += s.journal.bytes_written
                s.close()
                s = Store.open(rec_dev, write=True)
                rec.reopens += 1
        rec.final_root_level = s.btrees.roots[X].level
        rec.journal_bytes += s.journal.bytes_written
        rec.ring_bytes = s.journal_capacity()
        s.close()
    rec.counters = counters
    return rec


def check_state(rec: Recording, state: CrashState, dev: MemoryDevice) -> None:
    want_idx = rec.expected(state, dev)
    want = rec.models[want_idx]
    what = f"{state.describe()}; expected the model after {want_idx} transactions"
    try:
        s = Store.open(dev)
        got = keys_of(s)
        s.close()
        assert got == want, f"read-only open shows {_diff(got, want)}"
        s = Store.open(dev, write=True)
        got = keys_of(s)
        assert got == want, f"writable open shows {_diff(got, want)}"
        s.close()
        s = Store.open(dev)
        assert s.was_clean, "not clean after a writable open and close"
        got = keys_of(s)
        assert got == want, f"after recovery: {_diff(got, want)}"
        check_alloc_consistency(s)
        s.close()
    except BfsError as e:
        raise AssertionError(f"{what}: {type(e).__name__}: {e}") from e
    except AssertionError as e:
        raise AssertionError(f"{what}: {str(e).splitlines()[0]}") from None


def _diff(got: dict, want: dict) -> str:
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    changed = sorted(p for p in set(got) & set(want) if got[p] != want[p])
    return (f"{len(got)} keys (missing {missing[:5]}, extra {extra[:5]}, "
            f"changed {changed[:5]})")


_RECORDINGS: dict[tuple[int, int], Recording] = {}


def recording(ncommits: int, seed: int) -> Recording:
    key = (ncommits, seed)
    if key not in _RECORDINGS:
        _RECORDINGS[key] = record_workload(ncommits, seed)
    return _RECORDINGS[key]


DEFAULT_COMMITS = 150


def test_workload_exercises_the_engine():
    """The recorded workload really splits, merges, appends, compacts and wraps
    the journal ring several times (else the crash tests prove little)."""
    rec = recording(DEFAULT_COMMITS, 1)
    c = rec.counters
    assert c.splits >= 5 and c.merges >= 2, c
    assert c.appends >= 50 and c.cow_full >= 10, c
    assert rec.final_root_level >= 1
    assert rec.journal_bytes > 3 * rec.ring_bytes, (rec.journal_bytes, rec.ring_bytes)
    assert len(rec.commits) == DEFAULT_COMMITS + 1   # + close()
    s = Store.open(rec.base.clone())                 # the base is untouched
    assert keys_of(s) == {}


def _run(rec: Recording, *, seed: int, limits: CrashLimits, select=None) -> dict:
    kinds: dict[str, int] = {}
    for state, dev in crash_states(rec.base, rec.log, seed=seed, limits=limits, select=select):
        check_state(rec, state, dev)
        kinds[state.kind] = kinds.get(state.kind, 0) + 1
    return kinds


def test_every_flush_prefix_opens_at_the_last_commit():
    rec = recording(DEFAULT_COMMITS, 1)
    kinds = _run(rec, seed=0, limits=CrashLimits(), select=lambda ep: False)
    assert kinds["flush-prefix"] >= DEFAULT_COMMITS


def test_pending_writes_subsets_reorders_and_torn_sectors():
    """Bounded seeded variants of the pending writes of every epoch."""
    rec = recording(DEFAULT_COMMITS, 1)
    kinds = _run(rec, seed=3, limits=CrashLimits(prefixes=2, drops=2, subsets=2, torn=2))
    assert kinds["torn"] >= 250 and kinds["subset"] + kinds["drop"] >= 50, kinds
    assert kinds["prefix"] >= 40, kinds


@pytest.mark.slow
@pytest.mark.skipif(not FULL, reason="full crash sweep: set BFS_CRASH_FULL=1")
@pytest.mark.parametrize("seed,mixed", [(1, False), (2, False), (3, True), (5, True)])
def test_full_crash_sweep(seed, mixed):
    """Every epoch of longer workloads, more variants each."""
    rec = record_workload(400, seed, mixed=mixed)
    assert rec.journal_bytes > 8 * rec.ring_bytes
    _run(rec, seed=seed, limits=CrashLimits(prefixes=6, drops=4, subsets=6, torn=4))


def test_rebuild_reproduces_a_state():
    """A failing state can be rebuilt from its description alone."""
    rec = recording(DEFAULT_COMMITS, 1)
    for n, (state, dev) in enumerate(crash_states(rec.base, rec.log, seed=5,
                                                  limits=CrashLimits(max_states=400))):
        if state.torn is not None or n == 399:
            again = rebuild(rec.base, rec.log, state)
            assert again.chunks.keys() == dev.chunks.keys()
            assert all(again.chunks[i] == dev.chunks[i] for i in dev.chunks)
            break


def test_mixed_workload_unjournalled_and_reopens():
    """Several transactions per commit, unjournalled ones (large, or asked
    for) between journalled ones, clean close + reopen: every flush prefix and
    a seeded sample of pending-write variants."""
    rec = recording_mixed(120, 4)
    assert rec.unjournalled >= 5 and rec.reopens >= 1, (rec.unjournalled, rec.reopens)
    assert rec.journal_bytes > 3 * rec.ring_bytes
    sample = random.Random(9)
    kinds = _run(rec, seed=4, limits=CrashLimits(prefixes=2, drops=2, subsets=2, torn=2),
                 select=lambda ep: sample.random() < 0.2)
    assert kinds["flush-prefix"] >= 120 and kinds["torn"] >= 20, kinds


def recording_mixed(ncommits: int, seed: int) -> Recording:
    key = (ncommits, seed, "mixed")
    if key not in _RECORDINGS:
        _RECORDINGS[key] = record_workload(ncommits, seed, mixed=True)
    return _RECORDINGS[key]


def test_crash_during_recovery():
    """Crash states of a recovery (writable open of a crashed image), itself
    followed by one transaction and its commit, open at the crashed image's
    contents or after that commit — never at something in between."""
    rec = recording(DEFAULT_COMMITS, 1)
    picked = []
    variants = (st for st in crash_states(rec.base, rec.log, seed=11,
                                          limits=CrashLimits(prefixes=1, drops=1, subsets=1,
                                                             torn=1))
                if st[0].kind != "flush-prefix")
    for n, (state, dev) in enumerate(variants):
        if n % 50 == 5:
            picked.append((state, dev))
    assert len(picked) >= 4
    checked = 0
    for state, dev in picked:
        k = rec.expected(state, dev)
        rec2 = Recording(dev.clone(), [], [rec.models[k]])
        rdev = RecordingDevice(dev.clone())
        rec2.log = rdev.log
        rng = random.Random(state.epoch)
        with track_commits(rdev, rec2):
            s = Store.open(rdev, write=True)
            assert not s.was_clean
            model = dict(rec2.models[0])
            t = s.transaction()
            for _ in range(20):
                key = xkey(rng.randrange(1500), rng.randbytes(rng.randrange(10, 300)))
                t.update(X, key)
                model[key.pos] = key.val
            t.commit()
            rec2.models.append(model)
            s.commit()
            s.close()
        assert rec2.commits[0][1] == 0   # the recovery's own commit point
        for state2, dev2 in crash_states(rec2.base, rec2.log, seed=state.epoch,
                                         limits=CrashLimits(prefixes=2, drops=2, subsets=2,
                                                            torn=2)):
            check_state(rec2, state2, dev2)
            checked += 1
    assert checked >= 20


def test_crash_state_builder_on_a_small_log():
    """bfs_tools.io.crash on a hand-made log: what each state may and must hold."""
    from bfs_tools.io.crash import epochs, flush_indices

    base = MemoryDevice(1 << 20)
    base.write(0, b"o" * 2048)
    a, b, c, d = (bytes([x]) * 1024 for x in b"ABCD")
    log = [WriteOp(0, a), WriteOp(4096, b), FlushOp(), WriteOp(0, c), WriteOp(8192, d),
           WriteOp(1024, c)]
    assert flush_indices(log) == [2]
    assert [(e.start, e.end, e.writes) for e in epochs(log)] == [(0, 2, (0, 1)), (3, 6, (3, 4, 5))]
    states = list(crash_states(base, log, seed=1, limits=CrashLimits(
        prefixes=5, drops=5, subsets=10, torn=6)))
    digests = [st.digest for st, _ in states]
    assert len(set(digests)) == len(digests)            # deduplicated
    kinds = {st.kind for st, _ in states}
    assert {"flush-prefix", "prefix", "drop", "subset", "torn"} <= kinds
    assert states[0][0].kind == "flush-prefix" and states[0][1].read(0, 2048) == b"o" * 2048
    seen_first = set()
    for st, dev in states:
        if st.durable >= 3:                              # after the flush: A and B durable
            assert dev.read(4096, 1024) == b
        for i in st.applied:
            assert st.durable <= i < st.point and st.reached(i)
        if st.torn is None:
            for i in (3, 4, 5):                            # disjoint, so exactly
                assert write_intact(dev, log[i]) == st.reached(i)
        else:
            t = st.torn
            op = log[t.index]
            got = dev.read(op.offset, len(op.data))
            lo = t.sector * 512
            assert got[:lo] == op.data[:lo] and got[lo + 512:] == op.data[lo + 512:]
            assert not st.complete(t.index)
        again = rebuild(base, log, st)
        assert all(again.read(o, 1024) == dev.read(o, 1024) for o in (0, 1024, 4096, 8192))
        seen_first.add(dev.read(0, 1))
    assert {b"o", b"A", b"C"} <= seen_first               # old, durable, pending
    assert len(states) >= 12
