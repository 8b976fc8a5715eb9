"""Long commands: the journal ring wraps inside one command, and `snapshot delete`
commits many times (its unlink, then cleanup batches, then the tree rewrite).

Journal wrap-around: 4 journal buckets of 16 KiB (a 64 KiB ring) and a command
that journals several times that much in one epoch (hundreds of small
transactions: an API script of creates, and `rm -r` of a large directory,
one transaction per name). Reclaim writes the dirty nodes without a flush and
reuses ring buckets the last commit does not need; a crash anywhere in the
command (any subset of its writes, torn ones included) must show the image as
before the command, and the command's commit as after it.

Interrupted snapshot deletion: cleanup batches of 3 keys, so the deletion
commits a dozen times. From its first commit on, every state must show the
snapshot gone and every live view (the root and the other snapshot) exactly as
after the command: no cleanup batch may change what a live snapshot sees. Every
state also finishes the deletion when opened writable, or with `check -y`.
"""

from __future__ import annotations

import contextlib
import stat

from bfs_tools.io.crash import CrashLimits
from bfs_tools.snapshots import cleanup
from tests.fsck import lib

from . import workloads as W
from .conftest import FULL
from .harness import (
    IMAGE,
    Cmd,
    check_n,
    check_recording,
    check_y,
    crash_findings_only,
    formatted_device,
    journal_meter,
    model_of,
    record,
    run,
    states_of,
)

MANY_LIMITS = CrashLimits(prefixes=24, drops=12, subsets=24, torn=12)
REOPEN = True if FULL else (lambda n: n % 2 == 0)     # the writable open as well
if FULL:
    MANY_LIMITS = CrashLimits(prefixes=150, drops=60, subsets=150, torn=60)


def create_many(n: int, where: str = "/"):
    def fn(fs):
        d = fs.resolve(where).where
        for i in range(n):
            fs.create(d, b"f%04d" % i, stat.S_IFREG | 0o644, data=W.blob(i, 40 + (i * 53) % 900))
    return fn


def test_journal_wraps_inside_one_command(count_states):
    """400 transactions in one command (one epoch): the journal writes more than
    twice its ring."""
    base = formatted_device()
    with journal_meter() as j:
        rec = record("create-400", base, [Cmd("create-400", api=create_many(400))])
    assert rec.done[0].rc == 0 and len(rec.done[0].commits) == 1
    assert j["ring"] == 4 * 16384 and j["bytes"] > 2 * j["ring"], j
    st = check_recording(rec, seed=1, limits=MANY_LIMITS, reopen=REOPEN)
    count_states(st.states)
    assert st.outcomes.get("after 0", 0) > 30 and st.outcomes.get("after 1"), st.outcomes


def test_journal_wraps_inside_rm_r(count_states):
    """`rm -r` of a directory of 300 files: one transaction per name, one commit."""
    base = formatted_device()
    with lib.deterministic(3):
        rc, err = run(Cmd("setup", api=_dir_of(300)), base)
    assert rc == 0, err
    with journal_meter() as j:
        rec = record("rm-r-300", base, [Cmd("rm-r", ("rm", "-r", IMAGE, "/big"))])
    assert rec.done[0].rc == 0, rec.done[0].err
    assert len(rec.done[0].commits) == 1 and "/big" not in rec.models[1]["tree"]
    assert j["bytes"] > 2 * j["ring"], j
    st = check_recording(rec, seed=2, limits=MANY_LIMITS, reopen=REOPEN)
    count_states(st.states)
    assert st.outcomes.get("after 0", 0) > 30 and st.outcomes.get("after 1"), st.outcomes


def _dir_of(n: int):
    def fn(fs):
        fs.create(fs.root(), b"big", stat.S_IFDIR | 0o755)
        create_many(n, "/big")(fs)
    return fn


# ---------------------------------------------------------------------- snapshot delete


@contextlib.contextmanager
def small_batches(n: int):
    saved = cleanup.BATCH
    cleanup.BATCH = n
    try:
        yield
    finally:
        cleanup.BATCH = saved


def _two_snapshots(fs):
    """Files, then snapshots /s1 and /s2 of /, each side then changed."""
    from bfs_tools.snapshots.subvolume import create_snapshot

    root = fs.root()
    for i in range(6):
        fs.create(root, b"f%d" % i, stat.S_IFREG | 0o644, data=W.blob(50 + i, 3000 + 7000 * i))
    create_snapshot(fs, "/", "/s1")
    create_snapshot(fs, "/", "/s2")
    for i in range(6):
        for view, seed in (("/s1", 60), ("/s2", 70), ("", 80)):
            r = fs.resolve(f"{view}/f{i}")
            fs.write(r.where, 1000 * i, W.blob(seed + i, 2500), "f")
    s1 = fs.resolve("/s1").where
    fs.create(s1, b"only-in-s1", stat.S_IFREG | 0o644, data=W.blob(90, 20000))
    fs.unlink(fs.resolve("/s2").where, b"f0")


def _snapshot_base():
    base = formatted_device()
    with lib.deterministic(4):
        rc, err = run(Cmd("setup", api=_two_snapshots), base)
    assert rc == 0, err
    return base


def _delete_s1() -> Cmd:
    return Cmd("snap-delete-batched", ("snapshot", "delete", IMAGE, "/s1"),
               context=lambda: small_batches(3))


def test_interrupted_snapshot_deletion(count_states):
    rec = record("snap-delete-batched", _snapshot_base(), [_delete_s1()])
    d = rec.done[0]
    assert d.rc == 0, d.err
    # the unlink, a dozen cleanup batches, the snapshot tree rewrite, close
    assert len(d.commits) >= 10, d.commits
    assert "/s1" in rec.models[0]["tree"] and "/s1" not in rec.models[1]["tree"]
    assert "/s2/f3" in rec.models[1]["tree"]
    limits = CrashLimits(prefixes=6, drops=4, subsets=6, torn=4) if not FULL else MANY_LIMITS
    st = check_recording(rec, seed=5, limits=limits, reopen=True)
    count_states(st.states)
    mid = [s for s, _ in states_of(rec, seed=5, limits=CrashLimits(0, 0, 0, 0))
           if d.commits[0] < s.durable <= d.commits[-2]]
    assert len(mid) >= 8, len(mid)        # crash states inside the cleanup were checked


def test_interrupted_snapshot_deletion_finished_by_check(count_states):
    """Crashes inside the cleanup: `check -y` finishes the deletion (nothing to
    report: the superblock says a deletion is in progress), then `check -n` is
    clean and the tree is the one after the command."""
    rec = record("snap-delete-batched", _snapshot_base(), [_delete_s1()])
    d = rec.done[0]
    n = 0
    for state, dev in states_of(rec, seed=6, limits=CrashLimits(prefixes=2, drops=1, subsets=1,
                                                                  torn=1)):
        if not d.commits[0] < state.durable <= d.commits[-2]:
            continue
        with lib.deterministic(6):
            rc, findings = check_y(dev)
        assert rc in (0, 1) and crash_findings_only(findings), (state.describe(), findings)
        assert check_n(dev) == [], state.describe()
        assert model_of(dev, times=False) == model_of_after(rec), state.describe()
        n += 1
    assert n >= 8
    count_states(n)


def model_of_after(rec):
    key = id(rec)
    if key not in _AFTER:
        dev = rec.base.clone()
        for op in rec.log:
            if hasattr(op, "data"):
                dev.write(op.offset, op.data)
        _AFTER[key] = model_of(dev, times=False)
    return _AFTER[key]


_AFTER: dict = {}
