"""Reflink values and refcount triggers (bcachefs semantics).

An indirect extent (`reflink_v`, or `indirect_inline_data`) lives in the
reflink btree at (0, end index, 0) and carries a refcount: the number of
`reflink_p` keys whose padded range covers it. A `reflink_p` in the extents
btree maps its range of a file to indexes [idx, idx + size) of the reflink
btree. The reflink_p trigger adds/removes one reference on every indirect key
its padded range touches; an indirect key whose refcount reaches zero is
deleted, which frees its data through the data trigger.
"""

from __future__ import annotations

import bisect
import heapq
import struct
from collections import namedtuple
from functools import partial

from .codec import record
from .errors import CorruptionError, FormatError
from .extents import decode_extent
from .formats.constants import REFLINK_IDX_MAX, REFLINK_REFCOUNT_MAX
from .formats.ids import AccountingType, BtreeId, KeyType
from .keys import Key, Pos, register, register_trigger

ReflinkPValue = record("ReflinkPValue")
_pack_p = ReflinkPValue.STRUCT.pack
_unpack_p = ReflinkPValue.unpack
RefcountHead = record("IndirectInlineDataValue")  # the refcount prefix shared by both kinds


class ReflinkP(namedtuple("ReflinkP", "idx front_pad back_pad")):
    __slots__ = ()

    def pack(self) -> bytes:
        try:
            return _pack_p(*self)
        except struct.error as e:
            raise FormatError(f"reflink_p: cannot encode {self}: {e}") from None


ReflinkV = namedtuple("ReflinkV", "refcount extent")


def decode_reflink_p(val: bytes) -> ReflinkP:
    v = ReflinkPValue.unpack(val)
    return ReflinkP(v.idx, v.front_pad, v.back_pad)


def decode_reflink_v(val: bytes) -> ReflinkV:
    refcount = RefcountHead.unpack(val).refcount
    return ReflinkV(refcount, decode_extent(val[8:]))


def refcount_of(k: Key) -> int:
    return RefcountHead.unpack(k.val).refcount


def with_refcount(k: Key, refcount: int) -> Key:
    return Key(k.pos, k.type, refcount.to_bytes(8, "little") + k.val[8:], size=k.size,
               version=k.version)


def reflink_p_key(pos: Pos, size: int, p: ReflinkP) -> Key:
    return Key(pos, KeyType.reflink_p, p.pack(), size=size)


def cut_reflink_p(k: Key, start: int, end: int) -> Key:
    """Part [start, end) of a reflink_p. An edge that was cut gets no padding; an
    untouched edge keeps its pad. Either way every indirect key the piece's
    range overlaps keeps a reference from it, so splits never leak references."""
    p = decode_reflink_p(k.val)
    skip_front = start - k.start
    new = ReflinkP(p.idx + skip_front, 0 if skip_front else p.front_pad,
                   0 if end != k.end else p.back_pad)
    return Key((k.pos[0], end, k.pos[2]), KeyType.reflink_p, new.pack(), size=end - start,
               version=k.version)


def padded_range(k: Key) -> tuple[int, int]:
    idx, front_pad, back_pad = _unpack_p(k.val)
    return idx - front_pad, idx + k.size + back_pad


def reflink_p_trigger(trans, btree_id: int, old: Key | None, new: Key | None) -> None:
    """Queue +1/-1 reference deltas over the padded ranges; they are netted and
    applied to the indirect keys just before the reflink btree's triggers run."""
    state = trans.deferred_state
    deltas = state.get("reflink_refs")
    if deltas is None:
        deltas = _deferred(trans)["reflink_refs"]
    for k, sign in ((old, -1), (new, 1)):
        if k is None or k.type != KeyType.reflink_p:
            continue
        idx, front_pad, back_pad = _unpack_p(k.val)
        deltas.append((idx - front_pad, idx + k.size + back_pad, sign, k.pos))
        state["reflink_referenced"] += sign * k.size


def _deferred(trans) -> dict:
    """The transaction's state for reference deltas, set up on first use."""
    state = trans.deferred_state
    if "reflink_refs" not in state:
        state["reflink_refs"] = []
        state["reflink_referenced"] = 0
        state["reflink_counted"] = {}
        trans.before(BtreeId.reflink, _apply_ref_deltas)
    return state


def add_counted_references(trans, counted: dict[Pos, list]) -> None:
    """References that reflink_p keys queued with update_accounted (a tree copy's
    bulk path) add to existing indirect keys, counted by the caller: {pos:
    [indirect key as committed, references added]}. They are netted with the
    reflink_p triggers' deltas, as those keys' triggers would have been."""
    mine = _deferred(trans)["reflink_counted"]
    for pos, (v, n) in counted.items():
        if v.type == KeyType.error:     # lost data: no refcount (as in _apply_ref_deltas)
            continue
        c = mine.get(pos)
        if c is None:
            mine[pos] = [v, n]
        else:
            c[1] += n


def _apply_ref_deltas(trans) -> None:
    """Net the queued deltas per indirect key and write the new refcounts.

    Deltas are grouped into clusters of overlapping ranges; each cluster is one
    pass over its indirect keys with a sweep (active deltas by end), so the cost
    is O((deltas + keys touched) log) even for thousands of reflink_p keys."""
    deltas = trans.deferred_state.pop("reflink_refs", [])
    referenced = trans.deferred_state.pop("reflink_referenced", 0)
    # pos -> [indirect key, net delta], starting from the counted references
    changes: dict[tuple, list] = trans.deferred_state.pop("reflink_counted", {})
    if referenced:      # the sectors reflink_p keys map, summed over all of them
        trans.acct((AccountingType.reflink, 0, 0), [0, referenced])
    if not deltas:
        _write_refcounts(trans, changes)
        return
    # the common case first: a pointer to indirect keys made in this transaction
    # (a remap's new keys: freshly allocated indexes, nothing else there), found
    # by position from the end of its range, one dict lookup per key
    new_key = partial(trans.pending_new, BtreeId.reflink)
    deltas = [d for d in deltas if not _net_new(new_key, d, changes)]
    deltas.sort(key=lambda d: d[0])
    clusters: list[list[tuple]] = []
    hi = None
    for d in deltas:
        if clusters and d[0] <= hi:     # touching too: one walk (copies of copies are)
            clusters[-1].append(d)
            hi = max(hi, d[1])
        else:
            clusters.append([d])
            hi = d[1]
    spans: list[tuple[int, int]] = []     # (start, end) of every indirect key seen
    for cl in clusters:
        lo, top = cl[0][0], max(d[1] for d in cl)
        i, n = 0, len(cl)
        active: list[tuple[int, int]] = []   # heap of (end, sign)
        net = 0
        for v in overlapping(trans, lo, top):
            while i < n and cl[i][0] < v.end:
                heapq.heappush(active, (cl[i][1], cl[i][2]))
                net += cl[i][2]
                i += 1
            while active and active[0][0] <= v.start:
                net -= heapq.heappop(active)[1]
            if not spans or spans[-1][0] < v.start:    # a key may span two clusters
                spans.append((v.start, v.end))
            if net and v.type != KeyType.error:
                changes.setdefault(v.pos, [v, 0])[1] += net
    ends = [e for _s, e in spans]
    for start, end, sign, pos in deltas:
        if sign <= 0:
            continue
        j = bisect.bisect_right(ends, start)
        if j == len(spans) or spans[j][0] >= end:
            raise CorruptionError(f"reflink pointer at {pos} refers to missing indexes "
                                  f"[{start}, {end}); run bfs check")
    _write_refcounts(trans, changes)


def _write_refcounts(trans, changes: dict[tuple, list]) -> None:
    for v, net in changes.values():
        if not net:
            continue
        refs = refcount_of(v) + net
        if refs < 0:
            raise CorruptionError(f"reflink refcount underflow at index {v.pos[1]}; run bfs check")
        if refs > REFLINK_REFCOUNT_MAX:
            raise CorruptionError(f"reflink refcount overflow at index {v.pos[1]}")
        if refs == 0:
            trans.delete(BtreeId.reflink, v.pos)
        else:
            trans.update(BtreeId.reflink, with_refcount(v, refs))


def _net_new(new_key, delta: tuple, changes: dict) -> bool:
    """Add `delta` to `changes` if new indirect keys (queued with update_new;
    new_key(pos) finds them) cover its range exactly end to start; False
    (nothing added) otherwise."""
    start, end, sign, _pos = delta
    if start >= end:
        return False
    tiles = []
    at = end
    while at > start:
        v = new_key((0, at, 0))
        if v is None:
            return False
        tiles.append(v)
        at = v.pos[1] - v.size
    for v in tiles:
        if v.type != KeyType.error:
            c = changes.get(v.pos)
            if c is None:
                changes[v.pos] = [v, sign]
            else:
                c[1] += sign
    return True


def overlapping(trans, lo: int, hi: int):
    """The indirect keys overlapping indexes [lo, hi), in order, read through
    `trans`. Indirect keys are made from single extents, so none is longer than
    the extent maximum: the range read stays bounded (a transaction's reads
    gather its queued keys in the whole range asked for)."""
    bound = hi + max(1, trans.store.sb.extent_max // 512)
    for v in trans.iter(BtreeId.reflink, (0, lo + 1, 0), (0, bound, 0)):
        if v.start >= hi:
            return
        yield v


def _validate_p(btree_id: int, k: Key) -> str | None:
    if len(k.val) != ReflinkPValue.SIZE:
        return f"reflink_p value of {len(k.val)} bytes"
    p = decode_reflink_p(k.val)
    if p.idx < p.front_pad or p.idx + k.size + p.back_pad > REFLINK_IDX_MAX:
        return "reflink_p range outside the index space"
    return None


def _validate_v(btree_id: int, k: Key) -> str | None:
    from .extents import _validate_extent

    if len(k.val) < 8:
        return "indirect value without refcount"
    if refcount_of(k) == 0:
        return "indirect extent with refcount 0"
    if k.type == KeyType.reflink_v:
        return _validate_extent(btree_id, Key(k.pos, KeyType.extent, k.val[8:], size=k.size))
    return None


def _p_text(k: Key) -> str:
    p = decode_reflink_p(k.val)
    return f"idx {p.idx} front_pad {p.front_pad} back_pad {p.back_pad}"


def _v_text(k: Key) -> str:
    from .extents import _extent_text

    if k.type == KeyType.reflink_v:
        body = _extent_text(Key(k.pos, KeyType.extent, k.val[8:], size=k.size))
    else:
        body = f"{len(k.val) - 8} bytes inline"
    return f"refcount {refcount_of(k)} {body}"


def _v_json(k: Key) -> dict:
    from .extents import _extent_json

    out = {"refcount": refcount_of(k)}
    if k.type == KeyType.reflink_v:
        out["extent"] = _extent_json(Key(k.pos, KeyType.extent, k.val[8:], size=k.size))
    else:
        out["bytes"] = len(k.val) - 8
        out["data"] = k.val[8:].hex()
    return out


register(KeyType.reflink_p, validate=_validate_p, to_text=_p_text,
         to_json=lambda k: decode_reflink_p(k.val)._asdict())
register(KeyType.reflink_v, validate=_validate_v, to_text=_v_text, to_json=_v_json)
register(KeyType.indirect_inline_data, validate=_validate_v, to_text=_v_text, to_json=_v_json)
register_trigger(KeyType.reflink_p, reflink_p_trigger)
