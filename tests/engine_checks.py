"""Shared helpers for storage-engine tests: small devices, xattr keys, the
alloc-consistency check, and counters of what a workload made the engine do.

    dev = mkdev(8 << 20, node=8192, bucket=16384, block=1024)
    s = Store.open(dev, write=True)
    ...
    check_alloc_consistency(Store.open(dev))   # AssertionError says what differs
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

from bfs_tools.formats.ids import AccountingType, BtreeId, DataType, KeyType

from bfs_tools.alloc.accounting import read_counters
from bfs_tools.alloc.alloc_key import decode_alloc
from bfs_tools.alloc.freespace import free_ranges
from bfs_tools.btree.tree import Btrees
from bfs_tools.format import format_device, plan_geometry
from bfs_tools.io.device import MemoryDevice
from bfs_tools.keys import Key

X = BtreeId.xattrs  # a btree whose keys the engine does not interpret beyond validation


def mkdev(size: int = 64 << 20, node: int = 16384, bucket: int = 65536,
          block: int | None = None) -> MemoryDevice:
    """A freshly formatted MemoryDevice."""
    dev = MemoryDevice(size)
    geo = plan_geometry(size, bucket_size=bucket, btree_node_size=node, block_size=block)
    format_device(dev, geo)
    return dev


def xkey(i: int, payload: bytes = b"v", inode: int = 1) -> Key:
    """A well-formed xattr key at (inode, i, 0): type 0, name "n<i>", value payload."""
    name = f"n{i}".encode()
    val = bytes([0, len(name)]) + len(payload).to_bytes(2, "little") + name + payload
    return Key((inode, i, 0), KeyType.xattr, val)


def keys_of(store, btree: int = X) -> dict:
    """{pos: value bytes} of every key of a btree."""
    return {k.pos: k.val for k in store.btrees.iter(btree)}


def check_alloc_consistency(store) -> None:
    """Alloc info agrees with reality (the store should be quiescent: clean, or
    just recovered and written):

      * every btree node is accounted in the alloc key of its bucket (type
        btree, dirty sectors = node size x nodes in it, gen = the pointers'
        gen), and no other bucket is marked btree;
      * accounting per data type = what the alloc keys say; per btree = its nodes;
      * the freespace index holds exactly the buckets whose alloc key is free
        (or absent), as non-overlapping, non-adjacent ranges.
    """
    sb = store.sb
    bt = store.btrees
    node_sectors = sb.btree_node_size // 512
    expect: dict[int, int] = {}
    gens: dict[int, set[int]] = {}
    per_btree: dict[int, int] = {}
    for b in BtreeId:
        for node in bt.walk_nodes(b):
            assert node.sector is not None, f"{node.ident()}: never written"
            bucket = node.sector * 512 // sb.bucket_size
            expect[bucket] = expect.get(bucket, 0) + node_sectors
            gens.setdefault(bucket, set()).add(node.gen)
            per_btree[b] = per_btree.get(b, 0) + node_sectors
    alloc = {k.pos[1]: decode_alloc(k) for k in bt.iter(BtreeId.alloc)}
    btree_buckets = {b: a.dirty_sectors for b, a in alloc.items() if a.data_type == DataType.btree}
    assert btree_buckets == expect, (
        f"btree buckets in alloc keys differ from the nodes: only in alloc "
        f"{ {b: s for b, s in btree_buckets.items() if expect.get(b) != s} }, "
        f"from nodes { {b: s for b, s in expect.items() if btree_buckets.get(b) != s} }")
    for bucket, gs in gens.items():
        assert gs == {alloc[bucket].gen}, (
            f"bucket {bucket}: node pointers carry gens {gs}, alloc key gen {alloc[bucket].gen}")
    for t in DataType:
        if t == DataType.free:
            continue
        mine = [a for a in alloc.values() if a.data_type == t]
        want = [len(mine), sum(a.dirty_sectors for a in mine)]
        got = read_counters(bt, AccountingType.data_type, t)
        assert got == want, f"accounting data_type={t.name}: {got}, alloc keys say {want}"
    for b in BtreeId:
        got = read_counters(bt, AccountingType.btree, b)
        assert got == [per_btree.get(b, 0)], (
            f"accounting btree={b.name}: {got}, nodes say {per_btree.get(b, 0)}")
    ranges = list(free_ranges(bt))
    for (lo1, hi1), (lo2, hi2) in zip(ranges, ranges[1:], strict=False):
        assert lo1 < hi1 < lo2 < hi2, f"freespace ranges touch or overlap: {lo1}..{hi1}, {lo2}..{hi2}"
    free = {b for lo, hi in ranges for b in range(lo, hi)}
    used = {b for b, a in alloc.items() if a.data_type != DataType.free}
    assert not free & used, f"buckets both free and in use: {sorted(free & used)[:10]}"
    missing = set(range(sb.nbuckets)) - free - used
    assert not missing, f"free buckets missing from freespace: {sorted(missing)[:10]}"
    assert max(free | used) < sb.nbuckets


@dataclass
class EngineCounters:
    """What the engine did while `count_engine_events()` was active."""

    splits: int = 0
    merges: int = 0
    root_collapses: int = 0
    appends: int = 0          # bsets appended to a written node
    cow_full: int = 0         # written node rewritten elsewhere: its appended bsets no longer fit
    cow_other: int = 0        # other copy-on-write (new node, structural change, blacklisted bsets)


@contextmanager
def count_engine_events():
    """Count splits, merges and node writes by kind (wraps Btrees methods)."""
    c = EngineCounters()
    orig_replace = Btrees._replace_in_parent
    orig_write = Btrees._write_node

    def replace(self, old, new_nodes, seq):
        if len(old) == 1 and len(new_nodes) == 2:
            c.splits += 1
        elif len(old) == 2 and len(new_nodes) == 1:
            c.merges += 1
        return orig_replace(self, old, new_nodes, seq)

    def write(self, node, seq):
        before = (node.sector, node.written, node.needs_rewrite, bool(node.dirty))
        orig_write(self, node, seq)
        sector, written, needs_rewrite, dirty = before
        if sector is not None and node.sector == sector:
            c.appends += 1
        elif sector is not None and not needs_rewrite and dirty:
            c.cow_full += 1
        else:
            c.cow_other += 1

    Btrees._replace_in_parent = replace
    Btrees._write_node = write
    try:
        yield c
    finally:
        Btrees._replace_in_parent = orig_replace
        Btrees._write_node = orig_write
