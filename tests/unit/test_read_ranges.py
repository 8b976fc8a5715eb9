"""btree/ranges.py read_ranges against Btrees.iter, range by range: ranges of
no key, one key and several, overlapping, repeated, reaching into the next
leaves (read through, or `spill`), and out of order."""

from __future__ import annotations

import random

import pytest

from bfs_tools.btree.ranges import read_ranges
from bfs_tools.store import Store
from tests.engine_checks import X, mkdev, xkey

SPILL = object()


@pytest.fixture(scope="module")
def store():
    """Keys at inodes 1..40, offsets 0..60 (some missing), in 4 KiB leaves."""
    rng = random.Random(7)
    s = Store.open(mkdev(16 << 20, node=4096, bucket=16384, block=512), write=True)
    t = s.transaction()
    for inode in range(1, 41):
        for off in range(0, 60, rng.choice([1, 1, 2, 7])):
            t.update(X, xkey(off, b"v" * rng.choice([1, 30, 200]), inode=inode))
    t.commit(journal=False)
    assert s.btrees.roots[X].level > 0    # many leaves
    return s


def _ranges(rng: random.Random, n: int) -> list:
    out = []
    for _ in range(n):
        inode = rng.randint(0, 42)
        a = rng.randint(0, 70)
        kind = rng.random()
        if kind < 0.5:        # one position
            out.append(((inode, a, 0), (inode, a, 0)))
        elif kind < 0.8:      # a few offsets
            out.append(((inode, a, 0), (inode, a + rng.randint(0, 10), 0)))
        else:                 # whole inodes, into the next leaves
            out.append(((inode, 0, 0), (inode + rng.randint(0, 3), 99, 0)))
    return out


@pytest.mark.parametrize("seed", range(8))
def test_read_ranges_match_iter(store, seed):
    rng = random.Random(seed)
    bt = store.btrees
    ranges = sorted(_ranges(rng, 300), key=lambda r: r[0])
    ranges += ranges[-3:]                               # repeated at the end
    want = [list(bt.iter(X, a, b)) for a, b in ranges]
    assert list(read_ranges(bt, X, ranges)) == want
    for got, (a, b), w in zip(read_ranges(bt, X, ranges, SPILL), ranges, want, strict=True):
        if got is SPILL:
            assert bt.find_leaf(X, a).max_key < b     # only ranges going on in the next leaves
        else:
            assert got == w
    shuffled = ranges[:]
    rng.shuffle(shuffled)                               # against the order asked for
    assert list(read_ranges(bt, X, shuffled)) == [list(bt.iter(X, a, b)) for a, b in shuffled]
