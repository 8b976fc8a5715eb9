"""Btrees.apply_sorted (large batches, leaf by leaf) against a dict model.

Transactions with more than APPLY_SORTED_MIN keys in a btree are applied with
apply_sorted: a random mix of inserts (also appended after the last key, as a
tree copy's new keys are), overwrites and deletes in a small image (4 KiB nodes)
so that leaves split into several at once, merge, and the root grows and
shrinks. After each transaction the btree holds exactly the model, journalled
or not; the image closes clean and reopens with exact alloc info.
"""

from __future__ import annotations

import random

import pytest
from bfs_tools.formats.ids import BtreeId

from bfs_tools.keys import HEADER_SIZE
from bfs_tools.store import Store
from bfs_tools.trans import APPLY_SORTED_MIN
from tests.engine_checks import X, check_alloc_consistency, keys_of, mkdev, xkey


def _batch(rng: random.Random, model: dict, serial: int, deletes: bool = True) -> dict:
    """{pos: value or None (delete)}: more than APPLY_SORTED_MIN positions.
    Without `deletes`, the overwrites and inserts of a batch without deleted
    keys, merged into a leaf at once when they are many (_overwrite_many)."""
    out: dict = {}
    existing = sorted(model)
    top = existing[-1][1] if existing else 0
    for _ in range(rng.randint(APPLY_SORTED_MIN + 1, 600)):
        r = rng.random()
        if r < 0.3 and existing:                      # overwrite
            pos = rng.choice(existing)
        elif r < 0.5 and existing and deletes:        # delete
            out[rng.choice(existing)] = None
            continue
        elif r < 0.8:                                 # append after the last key
            top += rng.randint(1, 3)
            pos = (1, top, 0)
        else:                                         # insert anywhere, or delete nothing
            pos = (rng.randint(1, 2), rng.randint(0, 5000), 0)
            if deletes and rng.random() < 0.1:
                out[pos] = None
                continue
        size = rng.choice([0, 8, 60, 200, 900])
        out[pos] = (serial.to_bytes(4, "little") * (size // 4 + 1))[:size]
    return out


def _check_leaves(store) -> None:
    """What the leaves keep beside their keys agrees with them: positions,
    sorted and in the leaf's range, and the byte count splits and merges
    go by."""
    for node in store.btrees.walk_nodes(X):
        if node.level:
            continue
        assert node.positions == [k.pos for k in node.keys]
        assert node.positions == sorted(set(node.positions))
        assert all(node.min_key <= p <= node.max_key for p in node.positions)
        assert node.bytes == sum(HEADER_SIZE + len(k.val) for k in node.keys)
        assert node.bytes <= store.btrees.capacity


@pytest.mark.parametrize("deletes", [True, False])
@pytest.mark.parametrize("seed", range(6))
def test_apply_sorted_matches_model(seed, deletes):
    rng = random.Random(seed)
    dev = mkdev(16 << 20, node=4096, bucket=16384, block=512)
    store = Store.open(dev, write=True)
    model: dict = {}
    for serial in range(12):
        t = store.transaction()
        batch = _batch(rng, model, serial, deletes)
        for pos, val in batch.items():
            if val is None:
                t.delete(X, pos)
                model.pop(pos, None)
            else:
                k = xkey(pos[1], val, inode=pos[0])
                t.update(X, k)
                model[pos] = k.val
        t.commit(journal=None if rng.random() < 0.5 else False)
        assert keys_of(store) == model
        _check_leaves(store)
        if serial == 8:      # nearly everything goes: leaves merge, the root shrinks
            t = store.transaction()
            for pos in sorted(model)[3:]:
                t.delete(X, pos)
                del model[pos]
            t.commit()
            assert keys_of(store) == model
            assert store.btrees.roots[X].level == 0
    store.close()
    s = Store.open(dev)
    assert s.was_clean
    assert keys_of(s) == model
    check_alloc_consistency(s)
    for b in BtreeId:
        list(s.btrees.iter(b))
