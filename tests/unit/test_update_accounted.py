"""Transaction.update_accounted: keys whose trigger effects the caller added."""

from __future__ import annotations

import pytest
from bfs_tools.formats.ids import AccountingType, BtreeId, KeyType

from bfs_tools.alloc.accounting import acct_pos, read_counters
from bfs_tools.errors import FormatError
from bfs_tools.fs.inode import Inode
from bfs_tools.keys import HEADER_SIZE, deleted_key
from bfs_tools.store import Store
from tests.engine_checks import X, keys_of, mkdev, xkey

INODES = BtreeId.inodes


def _inode_keys(first: int, n: int):
    return [Inode(first + i, mode=0o100644, nlink=1).key(0xFFFFFFFF) for i in range(n)]


def _nr_inodes(store) -> int:
    return read_counters(store.btrees, AccountingType.nr_inodes)[0]


def test_accounted_keys_skip_their_triggers():
    store = Store.open(mkdev(), write=True)
    base = _nr_inodes(store)
    t = store.transaction()
    t.update_accounted(INODES, _inode_keys(10_000, 100)[::-1])   # any order
    t.acct(acct_pos(AccountingType.nr_inodes), [100])            # what the triggers would add
    for k in _inode_keys(20_000, 3):                             # these run their triggers
        t.update_new(INODES, k)
    t.commit()
    assert _nr_inodes(store) == base + 103
    got = [k.pos[1] for k in store.btrees.iter(INODES) if k.pos[1] >= 10_000]
    assert got == [*range(10_000, 10_100), *range(20_000, 20_003)]
    store.close()


@pytest.mark.parametrize("again", ["update", "update_accounted"])
def test_an_accounted_position_cannot_be_queued_again(again):
    """Found at commit, before anything is applied, when the keys were not read
    back through the transaction."""
    store = Store.open(mkdev(), write=True)
    t = store.transaction()
    keys = _inode_keys(10_000, 2)
    t.update_accounted(INODES, keys)
    t.update_accounted(INODES, _inode_keys(10_002, 1))
    if again == "update":
        t.update(INODES, keys[1])
    else:
        t.update_accounted(INODES, _inode_keys(10_001, 1))
    with pytest.raises(FormatError, match="10001.*queued twice.*internal error"):
        t.commit(journal=False)
    assert store.btrees.get(INODES, keys[0].pos) is None
    store.abort()


def test_an_accounted_position_read_back_cannot_be_queued_again():
    """Once the btree is read through the transaction (which puts the keys of
    update_accounted with the others), at once."""
    store = Store.open(mkdev(), write=True)
    t = store.transaction()
    keys = _inode_keys(10_000, 2)
    t.update_accounted(INODES, keys)
    assert t.get(INODES, keys[1].pos) is keys[1]
    with pytest.raises(FormatError, match="internal error"):
        t.update(INODES, keys[0])
    t.update_accounted(INODES, _inode_keys(10_001, 1))
    with pytest.raises(FormatError, match="internal error"):
        t.get(INODES, keys[1].pos)
    store.abort()


def test_positions_queued_with_update_may_be_queued_again():
    """A btree holding accounted keys tells them from the keys queued with
    update(), however the two interleave: those may be queued again."""
    store = Store.open(mkdev(), write=True)
    base = _nr_inodes(store)
    t = store.transaction()
    accounted = _inode_keys(10_000, 5)
    t.update_accounted(INODES, accounted)
    t.acct(acct_pos(AccountingType.nr_inodes), [5])
    first, second = _inode_keys(20_000, 2)
    t.update_new(INODES, first)
    t.update_new(INODES, first)         # again: fine
    assert [k.pos for k in t.iter(INODES, accounted[0].pos)][:6] == \
        [k.pos for k in (*accounted, first)]
    with pytest.raises(FormatError, match="internal error"):
        t.update(INODES, accounted[3])
    t.update_new(INODES, second)        # queued after that check, then again
    t.update_new(INODES, second)
    with pytest.raises(FormatError, match="internal error"):
        t.update(INODES, accounted[0])
    t.commit(journal=False)
    assert _nr_inodes(store) == base + 7   # each trigger ran once
    store.close()


@pytest.mark.parametrize("journal", [False, None])
def test_accounted_keys_among_others_sorted_at_commit(journal):
    """Keys queued with update_accounted (not read back) and with update(),
    in several lists and any order, are applied in order; the queue's size
    counts both."""
    store = Store.open(mkdev(node=4096, bucket=16384), write=True)
    t = store.transaction()
    t.update_accounted(X, [xkey(i) for i in range(300, 0, -3)])
    for i in range(2, 400, 3):
        t.update(X, xkey(i))
    t.update_accounted(X, [xkey(i) for i in range(1000, 1100)])
    assert t.nr_updates == 100 + 133 + 100
    assert not t.queued_bytes_over(333 * (HEADER_SIZE + len(xkey(1000).val)))
    assert t.queued_bytes_over(300 * (HEADER_SIZE + len(xkey(1000).val)))
    t.commit(journal=journal)
    want = {(1, i, 0) for i in [*range(300, 0, -3), *range(2, 400, 3), *range(1000, 1100)]}
    assert set(keys_of(store)) == want
    store.close()
    assert set(keys_of(Store.open(store.dev))) == want


@pytest.mark.parametrize("node", [65536, 4096])   # a one-leaf btree rebuilt, or many leaves
@pytest.mark.parametrize("after", [False, True])    # the batch among the keys, or after them
def test_accounted_deleted_keys_remove(node, after):
    """Deleted keys queued with update_accounted remove their keys (or nothing),
    among new keys and overwrites: the btree layer is told the batch holds
    deletions."""
    store = Store.open(mkdev(node=node, bucket=4 * node), write=True)
    t = store.transaction()
    for i in range(0, 1200, 2):
        t.update(X, xkey(i))
    t.commit(journal=False)
    first = 1200 if after else 0
    t = store.transaction()
    batch = [deleted_key((1, i, 0)) if i % 4 == 0 else xkey(i, b"new")
             for i in range(first, first + 1400)]
    t.update_accounted(X, batch)
    t.commit(journal=False)
    want = {(1, i, 0) for i in range(0, 1200, 2)} - {k.pos for k in batch}
    want |= {k.pos for k in batch if k.type != KeyType.deleted}
    assert set(keys_of(store)) == want
    store.close()
    assert set(keys_of(Store.open(store.dev))) == want
