"""Transaction.update_appended and Btrees.append_encoded: new keys handed over
encoded, written as new leaves after the btree's last key.

Each case commits, reopens the device (so every key is read back from the
nodes written) and compares every key and the allocation information with
what the usual way of queueing the same keys gives."""

from __future__ import annotations

import pytest

from bfs_tools.errors import FormatError
from bfs_tools.keys import encode_key
from bfs_tools.store import Store
from tests.engine_checks import X, check_alloc_consistency, keys_of, mkdev, xkey


def _encoded(first: int, n: int, inode: int = 1) -> list[bytes]:
    return [encode_key(xkey(i, b"v" * 40, inode)) for i in range(first, first + n)]


def _expected(*ranges: tuple[int, int]) -> dict:
    keys = [xkey(i, b"v" * 40) for first, n in ranges for i in range(first, first + n)]
    return {k.pos: k.val for k in keys}


def _reopened(dev) -> Store:
    store = Store.open(dev, write=True)
    check_alloc_consistency(store)
    return store


def _dirty_leaves(store) -> int:
    """Leaves of X waiting to be written: the appended ones are written at once
    (and not kept in memory); keys applied the usual way leave theirs dirty."""
    return sum(1 for n in store.btrees.dirty if n.btree_id == X and n.level == 0)


def _leaves(store) -> int:
    return sum(1 for n in store.btrees.walk_nodes(X) if n.level == 0)


def test_into_an_empty_btree_the_keys_become_leaves_at_once():
    dev = mkdev()
    store = Store.open(dev, write=True)
    written = store.btrees.nodes_written
    t = store.transaction()
    t.update_appended(X, _encoded(0, 3000))
    t.commit(journal=False)
    assert store.btrees.nodes_written - written > 3     # the leaves, during the commit
    assert _dirty_leaves(store) == 0
    assert store.btrees.roots[X].level >= 1
    store.close()
    store = _reopened(dev)
    assert keys_of(store) == _expected((0, 3000))
    store.close()


def test_after_the_keys_of_a_deep_btree():
    """The last leaf's own keys go first into the new leaves; the parents
    split as they fill with pointers."""
    dev = mkdev(node=4096, bucket=16384)
    store = Store.open(dev, write=True)
    t = store.transaction()
    for k in (xkey(i, b"v" * 40) for i in range(2000)):
        t.update(X, k)
    t.commit(journal=False)
    levels = store.btrees.roots[X].level
    store.commit()
    t = store.transaction()
    t.update_appended(X, _encoded(2000, 6000))
    t.commit(journal=False)
    assert _dirty_leaves(store) == 0
    assert store.btrees.roots[X].level >= levels
    store.close()
    store = _reopened(dev)
    assert keys_of(store) == _expected((0, 8000))
    store.close()


@pytest.mark.parametrize("lists", [1, 3])
def test_several_lists_in_order(lists):
    dev = mkdev()
    store = Store.open(dev, write=True)
    t = store.transaction()
    per = 3000 // lists
    for i in range(lists):
        t.update_appended(X, _encoded(i * per, per))
    t.commit(journal=False)
    store.close()
    store = _reopened(dev)
    assert keys_of(store) == _expected((0, per * lists))
    store.close()


def test_fewer_than_a_leaf_go_the_usual_way():
    """Appending them as a leaf of their own would leave a small leaf behind
    each small copy."""
    dev = mkdev()
    store = Store.open(dev, write=True)
    t = store.transaction()
    t.update_appended(X, _encoded(0, 20))
    t.commit(journal=False)
    assert _leaves(store) == _dirty_leaves(store) == 1
    store.close()
    store = _reopened(dev)
    assert keys_of(store) == _expected((0, 20))
    store.close()


def test_a_btree_key_past_the_first_new_one_falls_back():
    dev = mkdev()
    store = Store.open(dev, write=True)
    t = store.transaction()
    t.update(X, xkey(50_000, b"v" * 40))
    t.commit()
    t = store.transaction()
    t.update_appended(X, _encoded(0, 3000))
    t.commit(journal=False)
    assert _dirty_leaves(store) > 1
    store.close()
    store = _reopened(dev)
    assert keys_of(store) == _expected((0, 3000), (50_000, 1))
    store.close()


@pytest.mark.parametrize("among", [3, 200])
def test_other_keys_queued_among_the_new_ones(among):
    """A few are encoded into their places; many make all of them go the usual
    way. Either way every key lands."""
    dev = mkdev()
    store = Store.open(dev, write=True)
    t = store.transaction()
    t.update(X, xkey(0, b"v" * 40))     # before: applied the usual way
    t.update_appended(X, [e for i, e in zip(range(1, 6000), _encoded(1, 5999), strict=True)
                          if i % 20])
    for i in range(20, 20 * (among + 1), 20):
        t.update(X, xkey(i, b"v" * 40))
    t.commit(journal=False)
    assert (_dirty_leaves(store) <= 1) == (among == 3)
    store.close()
    store = _reopened(dev)
    assert keys_of(store) == _expected((0, 1), *((i, 1) for i in range(1, 6000) if i % 20),
                                       *((i, 1) for i in range(20, 20 * (among + 1), 20)))
    store.close()


def test_an_other_key_at_a_new_position_is_an_internal_error():
    dev = mkdev()
    store = Store.open(dev, write=True)
    t = store.transaction()
    t.update_appended(X, _encoded(0, 3000))
    t.update(X, xkey(1500, b"w"))
    with pytest.raises(FormatError, match="queued twice.*internal error"):
        t.commit(journal=False)
    store.abort()


def test_read_through_the_transaction_and_journalled():
    """A read of the btree through the transaction decodes them; a journalled
    commit journals them as keys (replayed after a crash)."""
    dev = mkdev()
    store = Store.open(dev, write=True)
    t = store.transaction()
    t.update_appended(X, _encoded(0, 30))
    assert t.get(X, (1, 7, 0)).val == xkey(7, b"v" * 40).val
    assert [k.pos[1] for k in t.iter(X)] == list(range(30))
    t.commit(journal=True)
    store.commit()      # a commit point, then "crash": no close
    assert _leaves(store) == 1
    store = _reopened(dev)
    assert keys_of(store) == _expected((0, 30))
    store.close()


def test_counted_in_the_queue_size():
    store = Store.open(mkdev(), write=True)
    t = store.transaction()
    enc = _encoded(0, 10)
    t.update_appended(X, enc)
    assert t.nr_updates == 10
    assert t.queued_bytes_over(sum(map(len, enc)) - 1)
    assert not t.queued_bytes_over(sum(map(len, enc)))
    store.abort()
