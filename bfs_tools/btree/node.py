"""Btree nodes in memory, and their on-disk encoding (header + log of bsets).

In memory a node is two parallel sorted lists (positions, keys) plus, for
interior nodes, the loaded child nodes. On disk (formats/btree_node.py) it is a
header and one or more bsets: the first write puts the header and a bset with
every key; later writes append a bset with only the keys changed since (deleted
keys as `deleted`), each stamped with the highest journal seq it contains.
"""

from __future__ import annotations

import os
import struct
from bisect import bisect_left
from itertools import islice
from operator import attrgetter, itemgetter, le, lt

from ..checksum import checksum
from ..codec import record
from ..errors import CorruptionError, FormatError
from ..formats.constants import BSET_MAGIC, BTREE_NODE_MAGIC
from ..formats.ids import BTREE_KEY_TYPES, EXTENT_BTREES, KeyType
from ..keys import HEADER_SIZE, Key, Pos, btree_name, decode_keys, encode_keys, fmt_pos
from ..layouts import LAYOUTS

NodeHeader = record("NodeHeader")
BsetHeader = record("BsetHeader")
NODE_HEADER_SIZE = NodeHeader.SIZE
BSET_HEADER_SIZE = BsetHeader.SIZE

KEY_HEADER_FORMAT = LAYOUTS["KeyHeader"][0]   # (struct format of keys.py's key header)
_temp_ids = iter(range(-1, -(1 << 62), -1))
_pos_of = attrgetter("pos")
_val_of = attrgetter("val")
_type_of = attrgetter("type")
_size_of = attrgetter("size")
_offset_of = itemgetter(1)


class Node:
    """One btree node in memory."""

    __slots__ = ("btree_id", "level", "min_key", "max_key", "positions", "keys", "children",
                 "parent", "sector", "gen", "node_seq", "written", "dirty", "pin", "seq_max",
                 "bytes", "needs_rewrite", "unjournaled", "temp_id", "lru_tick", "bsets",
                 "problems")

    def __init__(self, btree_id: int, level: int, min_key: Pos, max_key: Pos,
                 keys: list[Key] | None = None, children: list | None = None,
                 positions: list[Pos] | None = None, nbytes: int | None = None):
        self.btree_id = btree_id
        self.level = level
        self.min_key = min_key
        self.max_key = max_key
        self.keys = keys if keys is not None else []
        # (every node read: C-level iteration instead of a Python loop per key;
        # a node just parsed gives them, the parse has made them already)
        self.positions = positions if positions is not None else list(map(_pos_of, self.keys))
        self.children = children if children is not None else (
            [None] * len(self.keys) if level > 0 else None)
        self.parent: Node | None = None
        self.sector: int | None = None   # on-disk location; None until first written
        self.gen = 0
        self.node_seq = 0
        self.written = 0                 # bytes of the node slot holding valid bsets
        self.dirty: dict | None = None   # pos -> Key|None changed since the last write
        self.pin = 0                     # oldest journal seq not yet written (0: none)
        self.seq_max = 0                 # highest journal seq applied
        self.bytes = nbytes if nbytes is not None else (
            HEADER_SIZE * len(self.keys) + sum(map(len, map(_val_of, self.keys))))
        self.needs_rewrite = True        # next write must be a full (COW) write
        self.unjournaled = False         # holds updates that are not in the journal
        self.temp_id = next(_temp_ids)
        self.lru_tick = 0
        self.bsets = 0
        self.problems: list[tuple[str, str]] | None = None  # lenient reads: (error, message)
        if children is not None:
            for c in children:
                if c is not None:
                    c.parent = self

    @property
    def is_leaf(self) -> bool:
        return self.level == 0

    @property
    def is_dirty(self) -> bool:
        return self.needs_rewrite or bool(self.dirty)

    def ident(self) -> str:
        where = f"sector {self.sector}" if self.sector is not None else "unwritten"
        return (f"btree {btree_name(self.btree_id)} level {self.level} node "
                f"[{fmt_pos(self.min_key)}, {fmt_pos(self.max_key)}] ({where})")

    def __repr__(self) -> str:
        return f"<Node {self.ident()} keys={len(self.keys)}>"


def new_node_seq() -> int:
    return int.from_bytes(os.urandom(8), "little") | 1


def encode_full(node: Node, magic64: int, csum_type: int, block_size: int,
                journal_seq: int) -> bytes:
    """Header + one bset holding every key, padded to the block size."""
    return encode_node(node.btree_id, node.level, node.min_key, node.max_key, node.node_seq,
                       encode_keys(node.keys), len(node.keys), magic64, csum_type, block_size,
                       journal_seq)


def encode_node(btree_id: int, level: int, min_key: Pos, max_key: Pos, node_seq: int,
                body: bytes, nkeys: int, magic64: int, csum_type: int, block_size: int,
                journal_seq: int) -> bytes:
    """Header + one bset of `nkeys` keys already encoded back to back in `body`
    (keys.encode_keys), padded to the block size."""
    head = NodeHeader(0, BTREE_NODE_MAGIC ^ magic64, node_seq, btree_id, level, 0,
                      *min_key, *max_key)
    raw = bytearray(head.pack())
    raw[0:8] = checksum(csum_type, bytes(raw[8:])).to_bytes(8, "little")
    raw += _sealed_bset(body, nkeys, node_seq, magic64, csum_type, journal_seq)
    raw += b"\0" * (-len(raw) % block_size)
    return bytes(raw)


def encode_bset(keys, node_seq: int, magic64: int, csum_type: int, journal_seq: int) -> bytes:
    return _sealed_bset(encode_keys(keys), len(keys), node_seq, magic64, csum_type,
                        journal_seq)


def _sealed_bset(body: bytes, nkeys: int, node_seq: int, magic64: int, csum_type: int,
                 journal_seq: int) -> bytes:
    """A bset header, checksummed over itself and `body`, then `body`."""
    head = bytearray(BsetHeader(0, BSET_MAGIC ^ magic64, node_seq, journal_seq, len(body),
                                nkeys).pack())
    csum = checksum(csum_type, bytes(head[8:]) + body)
    head[0:8] = csum.to_bytes(8, "little")
    return bytes(head) + body


class ParsedNode:
    __slots__ = ("node_seq", "btree_id", "level", "min_key", "max_key", "keys", "written",
                 "bsets", "skipped_bsets", "max_journal_seq", "problems", "rewrite",
                 "positions", "nbytes")


def parse_node(buf: bytes, *, magic64: int, csum_type: int, block_size: int,
               is_blacklisted, where: str, strict: bool = True) -> ParsedNode:
    """Decode and validate a node image. CorruptionError (with err id) on damage.

    Bsets after the first that fail their checksum or belong to another node
    instance end the node (they are torn or stale writes). Bsets stamped with a
    blacklisted journal seq are skipped and flagged so the node is rewritten.
    strict=False (check): damage inside the keys (order, range, types) is
    recorded in `problems` and the keys are kept sorted and in range, so the
    keys can be examined and repaired one by one instead of losing the node.
    """
    from ..formats.fsck_errors import BY_NAME as E

    if len(buf) < NODE_HEADER_SIZE + BSET_HEADER_SIZE:
        raise CorruptionError(f"{where}: node too short", E["btree_node_unreadable"].id)
    h = NodeHeader.unpack(buf)
    if h.magic != BTREE_NODE_MAGIC ^ magic64:
        raise CorruptionError(f"{where}: bad node magic (not a node of this filesystem)",
                              E["btree_node_unreadable"].id)
    if checksum(csum_type, buf[8:NODE_HEADER_SIZE]) != h.csum:
        raise CorruptionError(f"{where}: node header checksum mismatch",
                              E["btree_node_unreadable"].id)
    p = ParsedNode()
    p.node_seq = h.node_seq
    p.btree_id = h.btree_id
    p.level = h.level
    p.min_key = (h.min_key_inode, h.min_key_offset, h.min_key_snapshot)
    p.max_key = (h.max_key_inode, h.max_key_offset, h.max_key_snapshot)
    p.skipped_bsets = 0
    p.bsets = 0
    p.max_journal_seq = 0
    p.problems = []
    p.rewrite = False   # lenient: a strict read would fail, so only a full rewrite fixes it
    if p.min_key > p.max_key:
        raise CorruptionError(f"{where}: node min_key after max_key", E["btree_node_bad_range"].id)
    allowed = BTREE_KEY_TYPES.get(h.btree_id)
    if allowed is None:
        raise CorruptionError(f"{where}: unknown btree id {h.btree_id}",
                              E["btree_node_unreadable"].id)
    offset = NODE_HEADER_SIZE
    positions: list | None = None   # of `keys` (None: not made yet)
    nbytes: int | None = None       # encoded size of `keys` (None: not known yet)
    keys: list[Key] = []
    bset_magic = BSET_MAGIC ^ magic64
    while offset + BSET_HEADER_SIZE <= len(buf):
        b = BsetHeader.unpack(buf, offset)
        first = p.bsets == 0 and p.skipped_bsets == 0
        end = offset + BSET_HEADER_SIZE + b.bytes
        valid = (b.magic == bset_magic and b.node_seq == h.node_seq and end <= len(buf)
                 and checksum(csum_type, buf[offset + 8:end]) == b.csum)
        if not valid:
            if first:
                raise CorruptionError(f"{where}: first bset damaged (checksum or header)",
                                      E["btree_node_unreadable"].id)
            if (not strict and b.magic == bset_magic and b.node_seq == h.node_seq
                    and not is_blacklisted(b.journal_seq)):
                # check: a committed bset of this node instance is damaged; its
                # updates are lost, but the bsets after it are still this node's
                nxt = _next_valid_bset(buf, offset + block_size, bset_magic, h.node_seq,
                                       csum_type, block_size)
                p.problems.append(("btree_bset_bad_csum",
                                   f"{where}: bset at byte {offset} has a bad checksum; its "
                                   "updates are lost"))
                if nxt is None:
                    break
                offset = nxt
                continue
            if (strict and b.magic == bset_magic and b.node_seq == h.node_seq
                    and not is_blacklisted(b.journal_seq)):
                # Fix (committed updates silently dropped): a crash can only
                # tear a bset of an epoch that did not commit, and those seqs
                # are blacklisted; this one was committed, so it is damage.
                raise CorruptionError(f"{where}: bset at byte {offset} has a bad checksum "
                                      "(committed updates lost); run bfs check",
                                      E["btree_bset_bad_csum"].id)
            break
        offset = end + (-end % block_size)
        if is_blacklisted(b.journal_seq):
            p.skipped_bsets += 1
            continue
        try:
            bkeys = _decode_bset(buf, end - b.bytes, end, b.nkeys, where)
        except FormatError as e:
            # inside a valid checksum: written that way (or resealed damage)
            raise CorruptionError(str(e), E["btree_node_unreadable"].id) from None
        if len(bkeys) != b.nkeys:
            raise CorruptionError(f"{where}: bset key count mismatch",
                                  E["btree_node_unreadable"].id)
        if strict:
            checked = _check_keys(bkeys, p, allowed, where, deleted_ok=not first, E=E)
        else:
            try:
                checked = _check_keys(bkeys, p, allowed, where, deleted_ok=not first, E=E)
            except CorruptionError:
                p.rewrite = True   # strictly unreadable: only a full rewrite fixes it
                bkeys = _lenient_keys(bkeys, p, allowed, where, E)
                checked = None
        p.max_journal_seq = max(p.max_journal_seq, b.journal_seq)
        if first:
            keys = bkeys
            positions = checked
            # the bset is the keys' encoding, header and value each, back to back
            nbytes = b.bytes if checked is not None else None
        elif bkeys:
            nbytes = None
            if positions is None:
                positions = list(map(_pos_of, keys))
            _apply_bset(keys, positions, bkeys)
        p.bsets += 1
    if p.bsets == 0:
        # Only blacklisted bsets: the node was written by an epoch that never
        # committed; nothing valid references it.
        raise CorruptionError(f"{where}: node holds only blacklisted bsets",
                              E["btree_node_unreadable"].id)
    p.keys = keys
    p.positions = positions
    p.nbytes = nbytes
    p.written = offset
    return p


_fixed_size_keys: dict[int, struct.Struct] = {}   # value length -> the keys' record


def _decode_bset(buf: bytes, start: int, end: int, nkeys: int, where: str) -> list[Key]:
    """decode_keys(buf, start, end, where), the same keys. When every value of
    the bset has one length (all of an inodes or alloc bset, many others) the
    keys are records of one size, which struct.iter_unpack cuts and decodes in
    C: a third less time per key (~40 ms of reading 100,000 inodes)."""
    if nkeys and end - start >= HEADER_SIZE:
        val_len = buf[start] | buf[start + 1] << 8   # (KeyHeader: val_len first, u16)
        if (end - start) == nkeys * (HEADER_SIZE + val_len):
            rec = _fixed_size_keys.get(val_len)
            if rec is None:
                rec = _fixed_size_keys[val_len] = struct.Struct(
                    f"{KEY_HEADER_FORMAT}{val_len}s")
            out = []
            append = out.append
            new = object.__new__
            for vlen, ktype, _flags, size, version, inode, offset, snap, val in \
                    rec.iter_unpack(memoryview(buf)[start:end]):
                if vlen != val_len:
                    break   # (another length with the same total: key by key)
                k = new(Key)
                k.pos = (inode, offset, snap)
                k.type = ktype
                k.size = size
                k.version = version
                k.val = val
                append(k)
            else:
                return out
    return decode_keys(buf, start, end, where)


def _apply_bset(keys: list[Key], positions: list, newer: list[Key]) -> None:
    """Apply a later bset (sorted, newer keys win, `deleted` removes) to the sorted
    keys in place. Later bsets hold the few keys changed since the node's full
    write, so each is placed by bisection instead of re-sorting the whole node."""
    deleted = KeyType.deleted
    for k in newer:
        pos = k.pos
        i = bisect_left(positions, pos)
        found = i < len(positions) and positions[i] == pos
        if k.type == deleted:
            if found:
                del positions[i]
                del keys[i]
        elif found:
            keys[i] = k
        else:
            positions.insert(i, pos)
            keys.insert(i, k)


def _lenient_keys(keys: list[Key], p: ParsedNode, allowed, where: str, E) -> list[Key]:
    """Keys in order and inside the node's range; what was wrong goes to p.problems.

    Only the node's own structure is judged here (order, range, pointer keys in
    interior nodes); a leaf key's type and size are the keys pass's business, so
    each problem is reported once, by the pass that repairs it."""
    by_pos = {}
    prev = None
    unsorted = outside = None
    for k in keys:
        pos = k.pos
        if prev is not None and pos <= prev and unsorted is None:
            unsorted = pos
        prev = pos
        if not p.min_key <= pos <= p.max_key:
            outside = outside or pos
            continue
        if p.level > 0 and k.type not in (KeyType.btree_ptr, KeyType.deleted):
            p.problems.append(("key_type_not_allowed", f"{where}: interior node holds a "
                               f"{k.type} key at {fmt_pos(pos)}; dropped"))
            continue
        by_pos[pos] = k
    if unsorted is not None:
        p.problems.append(("btree_node_keys_unsorted",
                           f"{where}: keys out of order at {fmt_pos(unsorted)}"))
    if outside is not None:
        p.problems.append(("btree_node_keys_unsorted",
                           f"{where}: key {fmt_pos(outside)} outside the node's range"))
    return [by_pos[pos] for pos in sorted(by_pos)]


def _next_valid_bset(buf: bytes, start: int, magic: int, node_seq: int, csum_type: int,
                     block_size: int) -> int | None:
    """Offset of the next intact bset of this node instance at or after `start`."""
    off = start - start % block_size if start % block_size else start
    while off + BSET_HEADER_SIZE <= len(buf):
        b = BsetHeader.unpack(buf, off)
        end = off + BSET_HEADER_SIZE + b.bytes
        if (b.magic == magic and b.node_seq == node_seq and end <= len(buf)
                and checksum(csum_type, buf[off + 8:end]) == b.csum):
            return off
        off += block_size
    return None


def _keys_ok(keys: list[Key], p: ParsedNode, allowed, deleted_ok: bool) -> list | None:
    """What _check_keys checks, for the common case of keys that pass, in C-level
    loops (map/all/set: every key read goes through here): their positions if
    they pass. None: let _check_keys find the first problem and say what it is."""
    positions = list(map(_pos_of, keys))
    if not keys:
        return positions
    if positions[0] < p.min_key or positions[-1] > p.max_key:
        return None
    if not all(map(lt, positions, islice(positions, 1, None))):
        return None
    types = set(map(_type_of, keys))
    deleted = KeyType.deleted
    if p.level > 0:
        ok = types <= ({KeyType.btree_ptr, deleted} if deleted_ok else {KeyType.btree_ptr})
        return positions if ok else None
    if not types <= allowed:
        return None
    if p.btree_id in EXTENT_BTREES:
        # every extent-btree key: 0 < size <= its end offset
        sizes = list(map(_size_of, keys))
        if 0 in sizes or not all(map(le, sizes, map(_offset_of, positions))):
            return None
    return positions


def _check_keys(keys: list[Key], p: ParsedNode, allowed, where: str, deleted_ok: bool,
                E) -> list | None:
    """CorruptionError for the first key out of order, out of the node's range or
    of a type the node may not hold. The keys' positions when they are checked
    at once (_keys_ok), else None."""
    positions = _keys_ok(keys, p, allowed, deleted_ok)
    if positions is not None:
        return positions
    deleted, btree_ptr = KeyType.deleted, KeyType.btree_ptr
    interior = p.level > 0
    prev = None
    lo, hi = p.min_key, p.max_key
    is_extents = p.btree_id in EXTENT_BTREES and not interior
    for k in keys:
        pos = k.pos
        if prev is not None and pos <= prev:
            raise CorruptionError(f"{where}: keys out of order at {fmt_pos(pos)}",
                                  E["btree_node_keys_unsorted"].id)
        if pos < lo or pos > hi:
            raise CorruptionError(f"{where}: key {fmt_pos(pos)} outside the node's range",
                                  E["btree_node_keys_unsorted"].id)
        t = k.type
        if interior:
            # Fix: an appended bset of an interior node removes the pointers a
            # merge replaced with `deleted` keys, as leaves do.
            if t != btree_ptr and not (deleted_ok and t == deleted):
                raise CorruptionError(f"{where}: interior node holds a {t} key at {fmt_pos(pos)}",
                                      E["key_type_not_allowed"].id)
        elif t not in allowed and not (deleted_ok and t == deleted):
            raise CorruptionError(
                f"{where}: key type {t} not allowed in btree {btree_name(p.btree_id)} "
                f"at {fmt_pos(pos)}", E["key_type_not_allowed"].id)
        elif is_extents and t != deleted and (k.size == 0 or k.size > pos[1]):
            raise CorruptionError(f"{where}: bad extent size {k.size} at {fmt_pos(pos)}",
                                  E["key_bad_pos"].id)
        prev = pos
