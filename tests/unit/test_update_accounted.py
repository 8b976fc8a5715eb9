"""Transaction.update_accounted: keys whose trigger effects the caller added."""

from __future__ import annotations

import pytest
from bfs_tools.formats.ids import AccountingType, BtreeId

from bfs_tools.alloc.accounting import acct_pos, read_counters
from bfs_tools.errors import FormatError
from bfs_tools.fs.inode import Inode
from bfs_tools.store import Store
from tests.engine_checks import mkdev

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


def test_an_accounted_position_cannot_be_queued_again():
    store = Store.open(mkdev(), write=True)
    t = store.transaction()
    keys = _inode_keys(10_000, 2)
    t.update_accounted(INODES, keys)
    with pytest.raises(FormatError, match="internal error"):
        t.update(INODES, keys[0])
    with pytest.raises(FormatError, match="internal error"):
        t.update_accounted(INODES, _inode_keys(10_001, 1))
    store.abort()
