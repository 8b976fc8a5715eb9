"""Pass alloc: recompute every bucket's state and all accounting from the btrees,
exactly as the triggers would have, and compare with what is persisted.

Persistent alloc info is only trustworthy because this pass exists. It walks
every btree node (btree buckets), every extent and indirect extent (user
buckets, with their pointer gens), the superblock and journal buckets, and
counts inodes, per-snapshot, per-btree and reflink sectors. Then, one finding
per bucket at most:
  * a bucket holding btree nodes or data must have an alloc key of that type
    (btree_ptr_to_free_bucket / ptr_to_free_bucket when it says free,
    alloc_key_missing when it has none, alloc_key_wrong otherwise, also for
    wrong live sectors and for a key marking an unused bucket in use);
  * generations (u8, compared modulo 256 like bcachefs' gen_after): a data
    pointer older than its bucket points at reused space, its data is gone
    (ptr_stale: the extent becomes an `error` key, reads say "data lost"); a
    pointer newer than the bucket means the alloc key is behind. A btree
    node's identity is proven by its node_seq, so a gen that differs from the
    bucket's (btree_ptr_stale) is repaired on the alloc key;
  * the freespace index must list exactly the free buckets;
  * every accounting counter must match.
Repairs rewrite alloc keys, rebuild the freespace index and rewrite the
accounting keys without triggers (this pass *is* what the triggers maintain),
applied after the count straight into the tree (see runner.py: no btree node
is written, so none moves, between the count and the repairs).
"""

from __future__ import annotations

from collections import Counter
from operator import attrgetter

from ...alloc.accounting import acct_pos, decode_counters, encode_counters
from ...alloc.alloc_key import Alloc, alloc_key, decode_alloc
from ...alloc.freespace import range_key
from ...codec import field_unpacker
from ...errors import BfsError
from ...extents import ExtentValue
from ...formats.ids import AccountingType, BtreeId, DataType, KeyType
from ...keys import Key, deleted_key
from ...reflink import decode_reflink_p, decode_reflink_v
from ..util import apply_direct, loc

A, FS, ACC = BtreeId.alloc, BtreeId.freespace, BtreeId.accounting
# of every extent, only where its data is (the pass reads nothing else of it)
_extent_ptr = field_unpacker("ExtentValue", "sector", "gen", "region_sectors")
_EXTENT_SIZE = ExtentValue.SIZE
_type_of = attrgetter("type")


def _name(dt: int) -> str:
    try:
        return DataType(dt).name
    except ValueError:
        return str(dt)


def gen_after(a: int, b: int) -> bool:
    """Is generation a newer than b (u8, wrapping)?"""
    return 0 < ((a - b) & 0xFF) < 128


class Usage:
    def __init__(self):
        self.buckets: dict[int, list] = {}     # bucket -> [data_type, sectors, gen or None]
        self.acct: Counter = Counter()         # (type, sub, index) -> value

    def add(self, bucket: int, dt: int, sectors: int, gen: int | None) -> None:
        b = self.buckets.get(bucket)
        if b is None:
            self.buckets[bucket] = [dt, sectors, gen]
        else:
            b[1] += sectors

    def acct_add(self, atype: int, sub: int, idx: int, value: int) -> None:
        if value:
            self.acct[(atype, sub, idx)] += value


class _Repairs:
    """Every repair of the pass, applied as one transaction (or, with -n, to the
    tree in memory only)."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.updates: list[tuple[int, Key]] = []

    def put(self, btree: int, key: Key, fix: bool) -> None:
        if fix or not self.ctx.writable:
            self.updates.append((btree, key))

    def apply(self) -> None:
        if not self.updates:
            return
        store = self.ctx.store
        if store.read_only or not self.ctx.state.get("alloc_trusted"):
            pending: dict = {}
            for btree, key in self.updates:
                pending.setdefault(btree, {})[key.pos] = key
            apply_direct(store, pending)
            return
        t = store.transaction()
        for btree, key in self.updates:
            t.update(btree, key)
        t.commit(run_triggers=False, journal=False)


def run(ctx) -> None:
    store = ctx.store
    sb = store.sb
    bt = store.btrees
    u = Usage()
    bsec = sb.bucket_size // 512
    nsec = sb.btree_node_size // 512
    fixed_types: dict[int, int] = {}
    for b in [*range(sb.first_bucket), sb.nbuckets - 1]:
        fixed_types[b] = DataType.superblock
    for b in sb.journal_buckets:
        fixed_types.setdefault(b, DataType.journal)
    for b, dt in fixed_types.items():
        u.add(b, dt, bsec, None)
    stored: dict[int, Alloc] = {}
    for k in bt.iter(A):
        try:
            stored[k.pos[1]] = decode_alloc(k)
        except BfsError:
            continue
    repairs = _Repairs(ctx)
    reported: set[int] = set()
    # btree nodes: bucket -> [(btree, node)]
    node_buckets: dict[int, list] = {}
    for btree in BtreeId:
        for node in bt.walk_nodes(btree):
            if node.sector is None:
                continue
            node_buckets.setdefault(node.sector * 512 // sb.bucket_size, []).append((btree, node))
    for bucket, nodes in sorted(node_buckets.items()):
        if bucket in fixed_types:
            for btree, node in nodes:
                ctx.report("bucket_data_type_mismatch", f"{btree.name} node at sector "
                           f"{node.sector}", f"bucket {bucket} is a "
                           f"{_name(fixed_types[bucket])} bucket", can_fix=False)
            continue
        gens = Counter(node.gen for _b, node in nodes)
        a = stored.get(bucket)
        gen = gens.most_common(1)[0][0]
        if a is not None and a.gen != gen and a.data_type == DataType.btree:
            msg = (f"bucket {bucket} gen {a.gen}, its nodes' pointers say gen {gen}; the "
                   "alloc key takes the pointers' gen")
            ctx.report("btree_ptr_stale", loc(A, (0, bucket, 0)), msg)
            reported.add(bucket)
        for btree, node in nodes:
            if node.gen != gen:
                # the node is what its pointer says (node_seq): the pointer's gen is wrong
                if ctx.act("btree_ptr_stale", f"{btree.name} node at sector {node.sector}",
                           f"pointer gen {node.gen}, the other nodes of bucket {bucket} say "
                           f"{gen}; the pointer is fixed"):
                    _fix_ptr_gen(bt, node, gen)
            u.acct_add(AccountingType.btree, btree, 0, nsec)
        u.add(bucket, DataType.btree, nsec * len(nodes), gen)
        if a is None or a.data_type == DataType.free:
            if a is not None:
                ctx.report("btree_ptr_to_free_bucket", loc(A, (0, bucket, 0)),
                           f"bucket {bucket} holds {len(nodes)} btree node(s) but is marked "
                           "free")
                reported.add(bucket)
    # data: extents and indirect extents
    stale: list[tuple[int, Key, str, str]] = []
    inode_t = KeyType.inode
    inodes = list(map(_type_of, bt.key_list(BtreeId.inodes))).count(inode_t)
    u.acct_add(AccountingType.nr_inodes, 0, 0, inodes)
    pointers: dict[int, list[tuple[int, Key, int]]] = {}   # bucket -> [(btree, key, gen)]
    extent_t, reflink_v_t, reflink_p_t = KeyType.extent, KeyType.reflink_v, KeyType.reflink_p
    first_bucket, end_bucket = sb.first_bucket, sb.nbuckets - 1
    for btree in (BtreeId.extents, BtreeId.reflink):
        for k in bt.key_list(btree):
            t = k.type
            try:
                if t == extent_t:
                    if len(k.val) < _EXTENT_SIZE:
                        continue   # (what decode_extent refuses)
                    sector, gen, region_sectors = _extent_ptr(k.val)
                elif t == reflink_v_t:
                    e = decode_reflink_v(k.val).extent
                    sector, gen, region_sectors = e.sector, e.gen, e.region_sectors
                else:
                    if t == reflink_p_t:
                        decode_reflink_p(k.val)
                        u.acct_add(AccountingType.reflink, 0, 1, k.size)
                    continue
            except BfsError:
                continue
            bucket = sector // bsec
            last = (sector + region_sectors - 1) // bsec
            if not first_bucket <= bucket < end_bucket or last != bucket:
                stale.append((btree, k, "ptr_beyond_device",
                              f"region at sector {sector} (+{region_sectors}) is outside "
                              "the data area or crosses a bucket"))
                continue
            if bucket in fixed_types or bucket in node_buckets:
                what = _name(fixed_types.get(bucket, DataType.btree))
                stale.append((btree, k, "bucket_data_type_mismatch",
                              f"its data is in bucket {bucket}, which holds {what}"))
                continue
            ptrs = pointers.get(bucket)
            if ptrs is None:
                pointers[bucket] = [(btree, k, gen)]
            else:
                ptrs.append((btree, k, gen))
    # sectors summed per bucket and per snapshot here, counted once each after
    snap_sectors: Counter = Counter()
    indirect_sectors = 0
    extents_btree = BtreeId.extents
    for bucket, ptrs in sorted(pointers.items()):
        a = stored.get(bucket)
        gens = {g for _b, _k, g in ptrs}
        if a is not None:
            bgen = a.gen
            if gens != {bgen}:   # (usually every pointer has the bucket's gen)
                newer = [g for g in gens if gen_after(g, bgen)]
                if newer:
                    bgen = max(newer, key=lambda g: (g - a.gen) & 0xFF)
        else:
            bgen = Counter(g for _b, _k, g in ptrs).most_common(1)[0][0]
        sectors = 0
        live = False
        for btree, k, g in ptrs:
            if g != bgen:
                stale.append((btree, k, "ptr_stale",
                              f"pointer gen {g}, bucket {bucket} gen {bgen}: the space was "
                              "reused"))
                continue
            live = True
            sectors += k.size
            if btree == extents_btree:
                snap_sectors[k.pos[2]] += k.size
            else:
                indirect_sectors += k.size
        if live:
            u.add(bucket, DataType.user, sectors, bgen)
        if (a is not None and a.data_type == DataType.free and bucket in u.buckets
                and bucket not in reported):
            ctx.report("ptr_to_free_bucket", loc(A, (0, bucket, 0)),
                       f"bucket {bucket} holds file data but is marked free")
            reported.add(bucket)
    for snap, sectors in snap_sectors.items():
        u.acct_add(AccountingType.snapshot, snap, 0, sectors)
    u.acct_add(AccountingType.reflink, 0, 0, indirect_sectors)
    for btree, k, name, why in stale:
        fix = ctx.report(name, loc(btree, k.pos), why + "; the data is lost (range marked lost)")
        repairs.put(btree, Key(k.pos, KeyType.error, b"", size=k.size), fix)
    _compare_alloc(ctx, u, stored, repairs, reported)
    _compare_freespace(ctx, u, repairs)
    _compare_accounting(ctx, u, repairs)
    repairs.apply()


def _fix_ptr_gen(bt, node, gen: int) -> None:
    from bisect import bisect_left

    from ...btree.ptr import make_ptr_key

    node.gen = gen
    parent = node.parent
    if parent is None:
        bt._mark_structural(node)   # a root: its pointer is written with the next commit
        return
    idx = bisect_left(parent.positions, node.max_key)
    bt._set_child_key(parent, idx, make_ptr_key(node.max_key, node.min_key, node.sector,
                                                node.node_seq, gen, node.level))


def _expected(u: Usage) -> dict[int, Alloc]:
    return {bucket: Alloc(gen or 0, dt, sectors)
            for bucket, (dt, sectors, gen) in u.buckets.items()}


def _compare_alloc(ctx, u: Usage, stored: dict[int, Alloc], repairs: _Repairs,
                   reported: set[int]) -> None:
    expected = _expected(u)
    for bucket in sorted(set(expected) | set(stored)):
        want = expected.get(bucket)
        have = stored.get(bucket)
        if want is not None and have == want:
            continue   # (most buckets: no location string to make)
        where = loc(A, (0, bucket, 0))
        if want is None:
            if have is not None and have.data_type != DataType.free:
                fix = ctx.report("alloc_key_wrong", where,
                                 f"marked {_name(have.data_type)} with {have.dirty_sectors} "
                                 "sectors, but nothing is in it")
                repairs.put(A, alloc_key(bucket, Alloc(have.gen, DataType.free, 0)), fix)
            continue
        if want.data_type in (DataType.superblock, DataType.journal):
            want = Alloc(have.gen if have else 0, want.data_type, want.dirty_sectors)
        if have == want:
            continue
        if bucket in reported:
            repairs.put(A, alloc_key(bucket, want), _was_fixed(ctx, where))
            continue
        if have is None:
            name = "sb_journal_bucket_not_marked" if want.data_type in (
                DataType.superblock, DataType.journal) else "alloc_key_missing"
            fix = ctx.report(name, where, f"holds {_name(want.data_type)} "
                             f"({want.dirty_sectors} sectors) but has no alloc key")
        else:
            fix = ctx.report("alloc_key_wrong", where,
                             f"is gen {have.gen} {_name(have.data_type)} {have.dirty_sectors} "
                             f"sectors, should be gen {want.gen} {_name(want.data_type)} "
                             f"{want.dirty_sectors} sectors")
        repairs.put(A, alloc_key(bucket, want), fix)


def _was_fixed(ctx, where: str) -> bool:
    for f in reversed(ctx.findings):
        if f.location == where:
            return f.fixed
    return False


def _free_ranges(u: Usage, sb) -> list[tuple[int, int]]:
    ranges = []
    start = None
    for b in range(sb.first_bucket, sb.nbuckets - 1):
        used = b in u.buckets
        if not used and start is None:
            start = b
        elif used and start is not None:
            ranges.append((start, b))
            start = None
    if start is not None:
        ranges.append((start, sb.nbuckets - 1))
    return ranges


def _compare_freespace(ctx, u: Usage, repairs: _Repairs) -> None:
    sb = ctx.store.sb
    bt = ctx.store.btrees
    want = _free_ranges(u, sb)
    keys = list(bt.iter(FS))
    have = []
    for k in keys:
        if k.type != KeyType.set:
            have.append(None)
        else:
            have.append((k.start, k.end))
    if want == have:
        return
    diff = sorted(set(want) ^ {h for h in have if h is not None})[:3]
    fix = ctx.report("freespace_wrong", "freespace", f"{len(have)} ranges stored, {len(want)} "
                     f"expected; first differences: {diff}")
    wanted = {range_key(a, b).pos: range_key(a, b) for a, b in want}
    for k in keys:
        if k.pos not in wanted:
            repairs.put(FS, deleted_key(k.pos), fix)
    for k in wanted.values():
        repairs.put(FS, k, fix)


def _compare_accounting(ctx, u: Usage, repairs: _Repairs) -> None:
    bt = ctx.store.btrees
    expected: dict[tuple[int, int, int], list[int]] = {}
    for (atype, sub, idx), value in u.acct.items():
        vals = expected.setdefault(acct_pos(atype, sub), [])
        vals += [0] * (idx + 1 - len(vals))
        vals[idx] = value
    for dt, sectors, _gen in u.buckets.values():
        vals = expected.setdefault(acct_pos(AccountingType.data_type, dt), [0, 0])
        vals[0] += 1
        vals[1] += sectors
    stored = {}
    for k in bt.iter(ACC):
        try:
            stored[k.pos] = decode_counters(k.val)
        except BfsError:
            stored[k.pos] = None
    for pos in sorted(set(expected) | set(stored)):
        want = _trim(expected.get(pos, []))
        have = _trim(stored.get(pos) or [])
        if want == have:
            continue
        fix = ctx.report("accounting_wrong", loc(ACC, pos), f"counters {have}, should be {want}")
        if want:
            repairs.put(ACC, Key(pos, KeyType.accounting, encode_counters(want)), fix)
        else:
            repairs.put(ACC, deleted_key(pos), fix)


def _trim(vals: list[int]) -> list[int]:
    vals = list(vals)
    while vals and vals[-1] == 0:
        vals.pop()
    return vals
