"""The storage engine: btree updates through transactions, splits and merges,
iteration, commit/close/reopen, journal replay after an unclean stop."""

from __future__ import annotations

import random

import pytest
from bfs_tools.formats.ids import AccountingType, BtreeId, DataType, KeyType

from bfs_tools.format import format_device, plan_geometry
from bfs_tools.io.device import MemoryDevice
from bfs_tools.keys import Key
from bfs_tools.store import Store

X = BtreeId.xattrs  # a btree whose keys the engine does not interpret beyond validation


def mkdev(size=64 << 20, node=16384, bucket=65536) -> MemoryDevice:
    dev = MemoryDevice(size)
    geo = plan_geometry(size, bucket_size=bucket, btree_node_size=node)
    format_device(dev, geo)
    return dev


def xkey(i: int, payload: bytes = b"v") -> Key:
    # a well-formed xattr value: type 0, name "n<i>", value payload
    name = f"n{i}".encode()
    val = bytes([0, len(name)]) + len(payload).to_bytes(2, "little") + name + payload
    return Key((1, i, 0), KeyType.xattr, val)


def keys_of(store, btree=X):
    return [(k.pos, k.val) for k in store.btrees.iter(btree)]


def test_insert_many_split_reopen():
    dev = mkdev()
    s = Store.open(dev, write=True)
    model = {}
    for batch in range(20):
        t = s.transaction()
        for i in range(batch * 200, batch * 200 + 200):
            k = xkey(i, bytes(50))
            t.update(X, k)
            model[k.pos] = k.val
        t.commit()
    assert s.btrees.roots[X].level >= 1  # it split
    s.close()
    s = Store.open(dev)
    assert keys_of(s) == sorted(model.items())
    s.close()


def _fill(dev, n: int) -> None:
    """Commit n keys of 40-byte values to the xattrs btree of dev (several levels)."""
    s = Store.open(dev, write=True)
    t = s.transaction()
    for i in range(n):
        t.update(X, xkey(i, bytes(40)))
    t.commit()
    s.close()


def test_open_reads_no_btree_node_until_a_btree_is_used():
    """Opening never walks metadata: roots are read when their btree is first
    used, and only theirs (DESIGN: open cost independent of the image)."""
    dev = mkdev(node=4096, bucket=16384)
    _fill(dev, 3000)
    s = Store.open(dev)
    assert s.btrees.nodes_read == 0
    assert s.btrees.roots[X].level >= 1 and s.btrees.nodes_read == 1
    assert len(keys_of(s)) == 3000
    read = s.btrees.nodes_read
    assert X not in s.btrees.roots.unread and len(s.btrees.roots) == len(BtreeId)
    # the other roots are still unread, and a commit keeps their pointers as they were
    assert set(s.btrees.roots.unread) == set(BtreeId) - {X}
    assert s.btrees.nodes_read == read
    s.close()


def test_delete_merges_and_collapses_root():
    dev = mkdev()
    _fill(dev, 3000)
    s = Store.open(dev, write=True)
    assert s.btrees.roots[X].level >= 1
    t = s.transaction()
    for i in range(3000):
        if i % 500:
            t.delete(X, (1, i, 0))
    t.commit()
    s.close()
    s = Store.open(dev)
    assert [p for p, _ in keys_of(s)] == [(1, i, 0) for i in range(0, 3000, 500)]
    assert s.btrees.roots[X].level == 0
    s.close()


def test_iteration_forward_backward_and_ranges():
    dev = mkdev()
    s = Store.open(dev, write=True)
    t = s.transaction()
    for i in range(0, 2000, 2):
        t.update(X, xkey(i, bytes(30)))
    t.commit()
    fwd = [k.pos for k in s.btrees.iter(X, (1, 101, 0), (1, 1501, 0))]
    assert fwd == [(1, i, 0) for i in range(102, 1501, 2)]
    back = [k.pos for k in s.btrees.iter_reverse(X, (1, 1501, 0), (1, 101, 0))]
    assert back == fwd[::-1]
    assert s.btrees.peek(X, (1, 3, 0)).pos == (1, 4, 0)
    assert s.btrees.peek_prev(X, (1, 3, 0)).pos == (1, 2, 0)
    s.close()


def test_transaction_reads_its_own_updates():
    dev = mkdev()
    s = Store.open(dev, write=True)
    t = s.transaction()
    t.update(X, xkey(5))
    t.update(X, xkey(7))
    assert t.get(X, (1, 5, 0)) is not None
    assert [k.pos for k in t.iter(X)] == [(1, 5, 0), (1, 7, 0)]
    t.delete(X, (1, 5, 0))
    assert [k.pos for k in t.iter(X)] == [(1, 7, 0)]
    t.commit()
    assert s.btrees.get(X, (1, 5, 0)) is None
    s.close()


def test_unclean_stop_replays_the_journal():
    dev = mkdev()
    s = Store.open(dev, write=True)
    t = s.transaction()
    for i in range(100):
        t.update(X, xkey(i))
    t.commit()
    s.commit()         # commit point, then "crash": no close
    t = s.transaction()
    t.update(X, xkey(1000))
    t.commit()         # not committed by a flush entry: must vanish
    image = dev.clone()
    s2 = Store.open(image)
    assert s2.replayed_keys > 0
    assert [p for p, _ in keys_of(s2)] == [(1, i, 0) for i in range(100)]
    s2.close()
    # a writable open makes the recovery durable and leaves the image clean
    s3 = Store.open(image, write=True)
    s3.close()
    s4 = Store.open(image)
    assert s4.was_clean
    assert [p for p, _ in keys_of(s4)] == [(1, i, 0) for i in range(100)]


def test_alloc_info_matches_reality_after_churn():
    dev = mkdev()
    s = Store.open(dev, write=True)
    rng = random.Random(1)
    live = set()
    for _ in range(30):
        t = s.transaction()
        for _ in range(300):
            i = rng.randrange(5000)
            if i in live and rng.random() < 0.5:
                t.delete(X, (1, i, 0))
                live.discard(i)
            else:
                t.update(X, xkey(i, bytes(rng.randrange(100))))
                live.add(i)
        t.commit()
        if rng.random() < 0.3:
            s.close()
            s = Store.open(dev, write=True)
    s.close()
    s = Store.open(dev)
    # every btree node is accounted in its bucket, and nothing else is
    node_sectors = s.sb.btree_node_size // 512
    expect: dict[int, int] = {}
    for b in BtreeId:
        for node in s.btrees.walk_nodes(b):
            bucket = node.sector * 512 // s.sb.bucket_size
            expect[bucket] = expect.get(bucket, 0) + node_sectors
    from bfs_tools.alloc.alloc_key import decode_alloc

    got = {k.pos[1]: decode_alloc(k) for k in s.btrees.iter(BtreeId.alloc)}
    btree_buckets = {b: a.dirty_sectors for b, a in got.items() if a.data_type == DataType.btree}
    assert btree_buckets == expect
    from bfs_tools.alloc.accounting import read_counters

    assert read_counters(s.btrees, AccountingType.data_type, DataType.btree) == [
        len(expect), sum(expect.values())]
    # freespace holds exactly the buckets whose alloc key is free
    from bfs_tools.alloc.freespace import free_ranges

    free = {b for lo, hi in free_ranges(s.btrees) for b in range(lo, hi)}
    used = {b for b, a in got.items() if a.data_type != DataType.free}
    assert not free & used
    assert free | used == set(range(s.sb.nbuckets))
    assert sorted(k.pos[1] for k in s.btrees.iter(X)) == sorted(live)


@pytest.mark.parametrize("size", [1 << 30, 100 << 30, (16 << 40) - 4096])
def test_format_cost_does_not_grow_with_size(size):
    dev = MemoryDevice(size)
    format_device(dev, plan_geometry(size))
    assert dev.allocated_bytes() < 8 << 20
    s = Store.open(dev)
    assert s.btrees.roots[BtreeId.inodes].keys
    s.close()
