"""Property tests of the storage engine against a dict model (hypothesis).

A state machine drives one small image (4 KiB nodes, 512-byte blocks, 16 KiB
buckets, a 4-bucket journal ring) through random transactions of inserts,
overwrites and deletes of xattr keys with random value sizes (so leaves split,
merge, get bsets appended and get compacted), journalled or not, random
commit points, clean close + reopen, and crashes (the device as it is at that
moment: every write issued reached the medium) followed by recovery. After
every step the btree holds exactly the model; a crash brings back exactly the
model of the last commit point; at the end the image reopens clean with exact
alloc info.
"""

from __future__ import annotations

import os

from bfs_tools.formats.ids import BtreeId
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from bfs_tools.store import Store
from tests.engine_checks import X, check_alloc_consistency, keys_of, mkdev, xkey

FULL = os.environ.get("BFS_CRASH_FULL") == "1"

_BASE = None


def base_image():
    global _BASE
    if _BASE is None:
        _BASE = mkdev(8 << 20, node=4096, bucket=16384, block=512)
    return _BASE.clone()


positions = st.tuples(st.integers(1, 3), st.integers(0, 300))
sizes = st.one_of(st.integers(0, 120), st.integers(120, 1200))
ops = st.lists(st.tuples(st.sampled_from(["put", "put", "delete"]), positions, sizes),
               min_size=1, max_size=25)


class EngineMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.dev = base_image()
        self.store = Store.open(self.dev, write=True)
        self.model: dict = {}        # what the btree holds now
        self.committed: dict = {}    # as of the last commit point
        self.serial = 0

    def _value(self, size: int) -> bytes:
        self.serial += 1
        return (self.serial.to_bytes(4, "little") * (size // 4 + 1))[:size]

    def _apply(self, batch, journal=None) -> None:
        t = self.store.transaction()
        for kind, (inode, off), size in batch:
            pos = (inode, off, 0)
            if kind == "delete":
                t.delete(X, pos)
                self.model.pop(pos, None)
            else:
                k = xkey(off, self._value(size), inode=inode)
                t.update(X, k)
                self.model[pos] = k.val
        t.commit(journal=journal)

    @rule(batch=ops)
    def transaction(self, batch):
        self._apply(batch)

    @rule(batch=ops)
    def unjournalled_transaction(self, batch):
        self._apply(batch, journal=False)

    @rule(n=st.integers(50, 200), size=st.integers(100, 400), inode=st.integers(1, 3))
    def bulk_insert(self, n, size, inode):
        """A transaction too big for a quarter of the journal: unjournalled."""
        self._apply([("put", (inode, 1000 + i), size) for i in range(n)])

    @precondition(lambda self: len(self.model) > 10)
    @rule(keep=st.integers(1, 5))
    def delete_most(self, keep):
        """Delete nearly everything: leaves merge, the root may collapse."""
        doomed = sorted(self.model)[keep:]
        for i in range(0, len(doomed), 60):
            t = self.store.transaction()
            for pos in doomed[i:i + 60]:
                t.delete(X, pos)
                del self.model[pos]
            t.commit()

    @rule()
    def commit(self):
        self.store.commit()
        self.committed = dict(self.model)

    @rule()
    def close_and_reopen(self):
        self.store.close()
        self.committed = dict(self.model)
        self.store = Store.open(self.dev, write=True)
        assert self.store.was_clean

    @rule()
    def crash_and_recover(self):
        """The device as it is now (no close): opens at the last commit point,
        read-only and then writable (recovery), and work goes on from there."""
        crashed = self.dev.clone()
        ro = Store.open(crashed)
        assert keys_of(ro) == self.committed
        self.store.abort()
        self.dev = crashed
        self.store = Store.open(self.dev, write=True)
        self.model = dict(self.committed)

    @invariant()
    def btree_matches_the_model(self):
        assert keys_of(self.store) == self.model

    def teardown(self):
        self.store.close()
        s = Store.open(self.dev)
        assert s.was_clean
        assert keys_of(s) == self.model
        check_alloc_consistency(s)
        for b in BtreeId:   # every node of every btree reads back
            list(s.btrees.iter(b))


EngineMachine.TestCase.settings = settings(
    max_examples=400 if FULL else 25, stateful_step_count=50 if FULL else 30, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
test_engine_state_machine = EngineMachine.TestCase
