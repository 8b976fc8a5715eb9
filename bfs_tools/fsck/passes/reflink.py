"""Pass reflink: refcounts recomputed from every reflink_p key, in every snapshot.

An indirect key's refcount is the number of reflink_p keys whose padded range
overlaps it. A reflink_p whose own range is not entirely backed by indirect
keys points at lost data: it becomes an `error` key.
"""

from __future__ import annotations

import heapq

from ...errors import BfsError
from ...formats.ids import BtreeId, KeyType
from ...keys import Key
from ...reflink import decode_reflink_p, padded_range, refcount_of, with_refcount
from ..util import Batch, loc

E, R = BtreeId.extents, BtreeId.reflink


def run(ctx) -> None:
    bt = ctx.store.btrees
    ptrs: list[tuple[int, int, Key]] = []
    reflink_p = KeyType.reflink_p   # (looked up once: this runs on every extent key)
    for k in bt.key_list(E):
        if k.type == reflink_p:
            try:
                start, end = padded_range(k)
                decode_reflink_p(k.val)
            except BfsError:
                continue
            ptrs.append((start, end, k))
    ptrs.sort(key=lambda p: p[0])
    indirect = [k for k in bt.iter(R) if k.type in (KeyType.reflink_v,
                                                     KeyType.indirect_inline_data)]
    batch = Batch(ctx)
    # sweep: indirect keys are disjoint and sorted; a heap holds the ends of the
    # pointers that started before the current key
    heap: list[int] = []
    i = 0
    for v in indirect:
        while i < len(ptrs) and ptrs[i][0] < v.end:
            heapq.heappush(heap, ptrs[i][1])
            i += 1
        while heap and heap[0] <= v.start:
            heapq.heappop(heap)
        refs = len(heap)
        have = refcount_of(v)
        if refs == 0:
            if ctx.act("reflink_v_unreferenced", loc(R, v.pos),
                          f"refcount {have} but nothing refers to it"):
                batch.t().delete(R, v.pos)
        elif refs != have:
            if ctx.act("reflink_refcount_wrong", loc(R, v.pos),
                          f"refcount {have}, references {refs}"):
                batch.t().update(R, with_refcount(v, refs))
    batch.flush()
    # every reflink_p's own range must be backed by indirect keys
    covered = [(v.start, v.end) for v in bt.iter(R) if v.type in (
        KeyType.reflink_v, KeyType.indirect_inline_data)]
    for _start, _end, k in ptrs:
        p = decode_reflink_p(k.val)
        if not _backed(covered, p.idx, p.idx + k.size):
            if ctx.act("reflink_p_to_missing", loc(E, k.pos),
                          f"indexes {p.idx}..{p.idx + k.size} not all present; the data is lost"):
                batch.t().update(E, Key(k.pos, KeyType.error, b"", size=k.size))
    batch.flush()


def _backed(ranges: list[tuple[int, int]], lo: int, hi: int) -> bool:
    from bisect import bisect_right

    i = bisect_right(ranges, (lo, 1 << 64)) - 1
    if i < 0:
        i = 0
    at = lo
    while i < len(ranges) and at < hi:
        a, b = ranges[i]
        if b <= at:
            i += 1
            continue
        if a > at:
            return False
        at = b
        i += 1
    return at >= hi
