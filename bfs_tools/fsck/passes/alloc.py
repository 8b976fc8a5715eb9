"""Pass alloc: recompute every bucket's state and all accounting from the btrees,
exactly as the triggers would have, and compare with what is persisted.

Persistent alloc info is only trustworthy because this pass exists. It walks
every btree node (btree buckets), every extent and indirect extent (user
buckets, with their pointer gens), the superblock and journal buckets, and
counts inodes, per-snapshot, per-btree and reflink sectors. Then:
  * each alloc key must match (gen, data type, live sectors);
  * a pointer whose gen differs from the bucket's is stale (its data was
    reused): the extent is replaced by an `error` key (reads say "data lost");
  * the freespace index must list exactly the free buckets;
  * every accounting counter must match.
Repairs rewrite alloc keys, rebuild the freespace index and rewrite the
accounting keys, without triggers (this pass *is* what the triggers maintain).
"""

from __future__ import annotations

from collections import Counter

from ...alloc.accounting import acct_pos, decode_counters, encode_counters
from ...alloc.alloc_key import Alloc, alloc_key, decode_alloc
from ...alloc.freespace import range_key
from ...errors import BfsError
from ...extents import decode_extent
from ...formats.ids import AccountingType, BtreeId, DataType, KeyType
from ...keys import Key
from ...reflink import decode_reflink_p, decode_reflink_v
from ..util import Batch, loc

A, FS, ACC = BtreeId.alloc, BtreeId.freespace, BtreeId.accounting


def _name(dt: int) -> str:
    try:
        return DataType(dt).name
    except ValueError:
        return str(dt)


class Usage:
    def __init__(self, sb):
        self.sb = sb
        self.buckets: dict[int, list] = {}          # bucket -> [data_type, sectors, Counter(gen)]
        self.acct: Counter = Counter()              # (type, sub, index) -> value
        self.conflicts: list[tuple[int, str]] = []

    def add(self, bucket: int, dt: int, sectors: int, gen: int | None, what: str) -> bool:
        b = self.buckets.get(bucket)
        if b is None:
            self.buckets[bucket] = [dt, sectors, Counter([gen]) if gen is not None else Counter()]
            return True
        if b[0] != dt:
            self.conflicts.append((bucket, f"{what}: bucket {bucket} also holds {_name(b[0])}"))
            return False
        b[1] += sectors
        if gen is not None:
            b[2][gen] += 1
        return True

    def acct_add(self, atype: int, sub: int, idx: int, value: int) -> None:
        if value:
            self.acct[(atype, sub, idx)] += value


def run(ctx) -> None:
    store = ctx.store
    sb = store.sb
    bt = store.btrees
    u = Usage(sb)
    bsec = sb.bucket_size // 512
    nsec = sb.btree_node_size // 512
    for b in [*range(sb.first_bucket), sb.nbuckets - 1]:
        u.add(b, DataType.superblock, bsec, None, "superblock")
    for b in sb.journal_buckets:
        u.add(b, DataType.journal, bsec, None, "journal")
    stored = {k.pos[1]: decode_alloc(k) for k in bt.iter(A)}
    # btree nodes
    for btree in BtreeId:
        for node in bt.walk_nodes(btree):
            if node.sector is None:
                continue
            bucket = node.sector * 512 // sb.bucket_size
            if not u.add(bucket, DataType.btree, nsec, node.gen, f"btree {btree.name} node"):
                continue
            u.acct_add(AccountingType.btree, btree, 0, nsec)
            a = stored.get(bucket)
            if a is None or a.data_type != DataType.btree:
                # repaired by the alloc key rewrite below
                ctx.report("btree_ptr_to_free_bucket", f"{btree.name} node at sector {node.sector}",
                           f"bucket {bucket} is marked {_name(a.data_type) if a else 'free'}")
    # data: extents and indirect extents
    stale: list[tuple[int, Key, str]] = []
    inodes = 0
    for k in bt.iter(BtreeId.inodes):
        if k.type == KeyType.inode:
            inodes += 1
    u.acct_add(AccountingType.nr_inodes, 0, 0, inodes)
    pointers: dict[int, list[tuple[int, Key, int]]] = {}   # bucket -> [(btree, key, gen)]
    for btree in (BtreeId.extents, BtreeId.reflink):
        for k in bt.iter(btree):
            e = None
            try:
                if k.type == KeyType.extent:
                    e = decode_extent(k.val)
                elif k.type == KeyType.reflink_v:
                    e = decode_reflink_v(k.val).extent
                elif k.type == KeyType.reflink_p:
                    u.acct_add(AccountingType.reflink, 0, 1, k.size)
                    decode_reflink_p(k.val)
            except BfsError:
                continue
            if e is None:
                continue
            bucket = e.sector // bsec
            if not sb.first_bucket <= bucket < sb.nbuckets - 1 or bucket in sb.journal_buckets:
                stale.append((btree, k, f"pointer to bucket {bucket}, outside the data area"))
                continue
            pointers.setdefault(bucket, []).append((btree, k, e.gen))
    for bucket, ptrs in sorted(pointers.items()):
        gens = Counter(g for _b, _k, g in ptrs)
        a = stored.get(bucket)
        # the bucket's gen: the alloc key's if some pointer agrees with it, else the
        # pointers' majority (then the alloc key is what is wrong)
        gen = a.gen if a is not None and a.gen in gens else gens.most_common(1)[0][0]
        for btree, k, g in ptrs:
            if g != gen:
                stale.append((btree, k, f"pointer gen {g}, bucket {bucket} gen {gen}"))
                continue
            if not u.add(bucket, DataType.user, k.size, g, f"{btree.name} key {k.pos}"):
                stale.append((btree, k, u.conflicts[-1][1]))
                continue
            if btree == BtreeId.extents:
                u.acct_add(AccountingType.snapshot, k.pos[2], 0, k.size)
            else:
                u.acct_add(AccountingType.reflink, 0, 0, k.size)
    batch = Batch(ctx, triggers=False)
    for btree, k, why in stale:
        name = "ptr_beyond_device" if "outside" in why else (
            "bucket_data_type_mismatch" if "also holds" in why else "ptr_stale")
        if ctx.report(name, loc(btree, k.pos), why + "; the data is lost"):
            batch.t().update(btree, Key(k.pos, KeyType.error, b"", size=k.size))
    for bucket, why in u.conflicts:
        if not any(why == s[2] for s in stale):
            ctx.report("bucket_data_type_mismatch", f"alloc:bucket {bucket}", why, can_fix=False)
    batch.flush()
    _compare_alloc(ctx, u, stored)
    _compare_freespace(ctx, u)
    _compare_accounting(ctx, u)


def _expected(u: Usage) -> dict[int, Alloc]:
    out = {}
    for bucket, (dt, sectors, gens) in u.buckets.items():
        gen = gens.most_common(1)[0][0] if gens else 0
        out[bucket] = Alloc(gen, dt, sectors)
    return out


def _compare_alloc(ctx, u: Usage, stored: dict[int, Alloc]) -> None:
    expected = _expected(u)
    batch = Batch(ctx, triggers=False)
    for bucket in sorted(set(expected) | set(stored)):
        want = expected.get(bucket)
        have = stored.get(bucket)
        if want is None:
            if have is not None and have.data_type != DataType.free:
                if ctx.report("alloc_key_wrong", f"alloc:bucket {bucket}",
                              f"marked {_name(have.data_type)} with {have.dirty_sectors} sectors, "
                              "but nothing is in it"):
                    batch.t().update(A, alloc_key(bucket, Alloc(have.gen, DataType.free, 0)))
            continue
        if want.data_type in (DataType.superblock, DataType.journal):
            want = Alloc(have.gen if have else 0, want.data_type, want.dirty_sectors)
        if have is None:
            name = "sb_journal_bucket_not_marked" if want.data_type in (
                DataType.superblock, DataType.journal) else "alloc_key_missing"
            if ctx.report(name, f"alloc:bucket {bucket}",
                          f"holds {_name(want.data_type)} ({want.dirty_sectors} sectors) but "
                          "has no alloc key"):
                batch.t().update(A, alloc_key(bucket, want))
        elif have != want:
            if ctx.report("alloc_key_wrong", f"alloc:bucket {bucket}",
                          f"is gen {have.gen} {_name(have.data_type)} {have.dirty_sectors} "
                          f"sectors, should be gen {want.gen} {_name(want.data_type)} "
                          f"{want.dirty_sectors} sectors"):
                batch.t().update(A, alloc_key(bucket, want))
    batch.flush()


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


def _compare_freespace(ctx, u: Usage) -> None:
    sb = ctx.store.sb
    bt = ctx.store.btrees
    want = _free_ranges(u, sb)
    have = [(k.start, k.end) for k in bt.iter(FS)]
    if want == have:
        return
    diff = sorted(set(want) ^ set(have))[:3]
    if ctx.report("freespace_wrong", "freespace", f"{len(have)} ranges stored, {len(want)} "
                  f"expected; first differences: {diff}"):
        batch = Batch(ctx, triggers=False)
        for k in list(bt.iter(FS)):
            batch.t().delete(FS, k.pos)
        for a, b in want:
            batch.t().update(FS, range_key(a, b))
        batch.flush()


def _compare_accounting(ctx, u: Usage) -> None:
    bt = ctx.store.btrees
    expected: dict[tuple[int, int, int], list[int]] = {}
    for (atype, sub, idx), value in u.acct.items():
        vals = expected.setdefault(acct_pos(atype, sub), [])
        vals += [0] * (idx + 1 - len(vals))
        vals[idx] = value
    for dt, sectors, _gens in u.buckets.values():
        vals = expected.setdefault(acct_pos(AccountingType.data_type, dt), [0, 0])
        vals[0] += 1
        vals[1] += sectors
    stored = {}
    for k in bt.iter(ACC):
        try:
            stored[k.pos] = decode_counters(k.val)
        except BfsError:
            stored[k.pos] = None
    batch = Batch(ctx, triggers=False)
    for pos in sorted(set(expected) | set(stored)):
        want = _trim(expected.get(pos, []))
        have = _trim(stored.get(pos) or [])
        if want == have:
            continue
        if ctx.report("accounting_wrong", loc(ACC, pos), f"counters {have}, should be {want}"):
            if want:
                batch.t().update(ACC, Key(pos, KeyType.accounting, encode_counters(want)))
            else:
                batch.t().delete(ACC, pos)
    batch.flush()


def _trim(vals: list[int]) -> list[int]:
    vals = list(vals)
    while vals and vals[-1] == 0:
        vals.pop()
    return vals
