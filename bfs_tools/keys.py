"""Keys in memory, their encoding, and the per-key-type operations registry.

A key is a position (inode, offset, snapshot) — a plain tuple, so tuple order is
position order — plus type, size (extent btrees), version and the raw value
bytes. Value layouts are declared in formats/ and decoded by the modules that
own each key type; those modules register the type's operations here:

    validate(btree_id, key) -> str | None   why the key is invalid, or None
    to_text(key) -> str                     one line, used by dump and check
    to_json(key) -> dict                    the value as JSON-able data
    triggers: [fn(trans, btree_id, old, new)]  keep derived state in step

`load_all_key_types()` imports every owner module so the registry is complete.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from .codec import layout
from .errors import FormatError
from .formats.constants import KEY_VALUE_MAX, U32_MAX, U64_MAX
from .formats.ids import BTREE_KEY_TYPES, EXTENT_BTREES, BtreeId, KeyType

Pos = tuple[int, int, int]

POS_MIN: Pos = (0, 0, 0)
POS_MAX: Pos = (U64_MAX, U64_MAX, U32_MAX)

_HEADER = layout("KeyHeader")[0]  # val_len, type, flags, size, version, inode, offset, snapshot
HEADER_SIZE = _HEADER.size
_unpack_header = _HEADER.unpack_from
_pack_header = _HEADER.pack
# (len(val), type, flags, size, version, inode, offset, snapshot) -> a key's header
pack_key_header = _pack_header


class Key:
    """One key. `val` is the raw value (bytes); `size` is in sectors/units for extent btrees."""

    __slots__ = ("pos", "type", "size", "version", "val")

    def __init__(self, pos: Pos, type: int, val: bytes = b"", size: int = 0, version: int = 0):
        self.pos = pos
        self.type = type
        self.val = val
        self.size = size
        self.version = version

    @property
    def start(self) -> int:
        """Start offset of the range an extent-btree key covers."""
        return self.pos[1] - self.size

    @property
    def end(self) -> int:
        return self.pos[1]

    @property
    def is_deleted(self) -> bool:
        return self.type == KeyType.deleted

    def encoded_size(self) -> int:
        return HEADER_SIZE + len(self.val)

    def copy(self, **changes) -> Key:
        k = Key(self.pos, self.type, self.val, self.size, self.version)
        for name, value in changes.items():
            setattr(k, name, value)
        return k

    def __eq__(self, other) -> bool:
        return (isinstance(other, Key) and self.pos == other.pos and self.type == other.type
                and self.size == other.size and self.version == other.version
                and self.val == other.val)

    def __hash__(self):
        return hash((self.pos, self.type, self.size, self.val))

    def __repr__(self) -> str:
        return f"Key({fmt_pos(self.pos)}, {type_name(self.type)}, size={self.size}, val={self.val.hex()[:32]})"


def deleted_key(pos: Pos) -> Key:
    return Key(pos, KeyType.deleted)


def encode_key(k: Key) -> bytes:
    inode, offset, snapshot = k.pos
    return _pack_header(len(k.val), k.type, 0, k.size, k.version, inode, offset, snapshot) + k.val


def encode_keys(keys) -> bytes:
    pack = _pack_header
    parts = []
    for k in keys:
        inode, offset, snapshot = k.pos
        parts.append(pack(len(k.val), k.type, 0, k.size, k.version, inode, offset, snapshot))
        parts.append(k.val)
    return b"".join(parts)


def encoded_pos(buf: bytes, offset: int = 0) -> Pos:
    """The position of the key encoded at buf[offset:] (encode_key's form)."""
    _vlen, _type, _flags, _size, _version, inode, offset_, snapshot = _unpack_header(buf, offset)
    return (inode, offset_, snapshot)


def decode_keys(buf: bytes, start: int = 0, end: int | None = None, what: str = "keys") -> list[Key]:
    """Decode concatenated keys in buf[start:end]; FormatError on any overrun."""
    if end is None:
        end = len(buf)
    out = []
    append = out.append
    unpack = _unpack_header
    new = object.__new__    # (Key.__new__ looked up once, not per key)
    pos = start
    hs = HEADER_SIZE
    limit = end - hs
    while pos < end:
        if pos > limit:
            raise FormatError(f"{what}: truncated key header at byte {pos}")
        vlen, ktype, flags, size, version, inode, offset, snap = unpack(buf, pos)
        vstart = pos + hs
        pos = vstart + vlen
        if pos > end:
            raise FormatError(f"{what}: key value overruns its container at byte {vstart}")
        k = new(Key)
        k.pos = (inode, offset, snap)
        k.type = ktype
        k.size = size
        k.version = version
        k.val = buf[vstart:pos]
        append(k)
    return out


def pos_succ(p: Pos) -> Pos:
    inode, offset, snap = p
    if snap < U32_MAX:
        return (inode, offset, snap + 1)
    if offset < U64_MAX:
        return (inode, offset + 1, 0)
    if inode < U64_MAX:
        return (inode + 1, 0, 0)
    return p


def pos_pred(p: Pos) -> Pos:
    inode, offset, snap = p
    if snap > 0:
        return (inode, offset, snap - 1)
    if offset > 0:
        return (inode, offset - 1, U32_MAX)
    if inode > 0:
        return (inode - 1, U64_MAX, U32_MAX)
    return p


def _fmt_field(v: int, maxv: int) -> str:
    return "U64_MAX" if maxv == U64_MAX and v == U64_MAX else (
        "U32_MAX" if v == U32_MAX and maxv == U32_MAX else str(v))


def fmt_pos(p: Pos) -> str:
    if p == POS_MIN:
        return "POS_MIN"
    if p == POS_MAX:
        return "POS_MAX"
    return f"{_fmt_field(p[0], U64_MAX)}:{_fmt_field(p[1], U64_MAX)}:{_fmt_field(p[2], U32_MAX)}"


def parse_pos(text: str) -> Pos:
    """Parse `inode:offset[:snapshot]`, POS_MIN or POS_MAX (U64_MAX/U32_MAX allowed)."""
    t = text.strip()
    if t.upper() == "POS_MIN":
        return POS_MIN
    if t.upper() in ("POS_MAX", "SPOS_MAX"):
        return POS_MAX
    parts = t.split(":")
    if len(parts) not in (2, 3):
        raise ValueError(f"invalid position {text!r}: expected inode:offset[:snapshot]")

    def num(s: str, maxv: int) -> int:
        s = s.strip()
        if s.upper() == "U64_MAX":
            v = U64_MAX
        elif s.upper() == "U32_MAX":
            v = U32_MAX
        else:
            v = int(s, 0)
        if not 0 <= v <= maxv:
            raise ValueError(f"invalid position {text!r}: {s} out of range")
        return v

    try:
        return (num(parts[0], U64_MAX), num(parts[1], U64_MAX),
                num(parts[2], U32_MAX) if len(parts) == 3 else 0)
    except ValueError as e:
        if "invalid position" in str(e):
            raise
        raise ValueError(f"invalid position {text!r}") from None


def type_name(t: int) -> str:
    try:
        return KeyType(t).name
    except ValueError:
        return f"unknown({t})"


def btree_name(b: int) -> str:
    try:
        return BtreeId(b).name
    except ValueError:
        return f"btree{b}"


# ---------------------------------------------------------------------------
# The registry


class KeyOps:
    """The operations of one key type (a plain class: a dataclass costs ~0.7 ms of
    every start-up)."""

    __slots__ = ("validate", "to_text", "to_json", "triggers")

    def __init__(self):
        self.validate: Callable[[int, Key], str | None] | None = None
        self.to_text: Callable[[Key], str] | None = None
        self.to_json: Callable[[Key], dict] | None = None
        self.triggers: list[Callable] = []


REGISTRY: dict[int, KeyOps] = {t: KeyOps() for t in KeyType}


def register(ktype: KeyType, *, validate=None, to_text=None, to_json=None) -> None:
    ops = REGISTRY[ktype]
    if validate is not None:
        ops.validate = validate
    if to_text is not None:
        ops.to_text = to_text
    if to_json is not None:
        ops.to_json = to_json


def register_trigger(ktype: KeyType, fn: Callable) -> None:
    ops = REGISTRY[ktype]
    if fn not in ops.triggers:
        ops.triggers.append(fn)


_loaded = False


def load_all_key_types() -> None:
    """Import every module that owns a key type, so REGISTRY is complete."""
    global _loaded
    if _loaded:
        return
    from . import extents, reflink  # noqa: F401
    from .alloc import accounting, alloc_key, freespace, triggers  # noqa: F401
    from .btree import ptr  # noqa: F401
    from .fs import dirent, inode, xattr  # noqa: F401
    from .snapshots import values  # noqa: F401
    _loaded = True


def validate_key(btree_id: int, k: Key) -> str | None:
    """Generic checks (type allowed in btree, sizes), then the type's own validate."""
    allowed = BTREE_KEY_TYPES.get(btree_id)
    if allowed is None:
        return f"unknown btree {btree_id}"
    if k.type not in allowed:
        return f"key type {type_name(k.type)} not allowed in btree {btree_name(btree_id)}"
    if len(k.val) > KEY_VALUE_MAX:
        return "value too long"
    if btree_id in EXTENT_BTREES:
        if k.size == 0 or k.size > k.pos[1]:
            return f"bad extent size {k.size} for end {k.pos[1]}"
    elif k.size != 0:
        return f"nonzero size {k.size} in a non-extent btree"
    ops = REGISTRY.get(k.type)
    if ops is not None and ops.validate is not None:
        try:
            return ops.validate(btree_id, k)
        except FormatError as e:
            return str(e)
    return None


def key_to_text(k: Key) -> str:
    """`type inode:offset:snapshot [len N] [ver V]: value` — one line."""
    head = f"{type_name(k.type)} {fmt_pos(k.pos)}"
    if k.size:
        head += f" len {k.size}"
    if k.version:
        head += f" ver {k.version}"
    ops = REGISTRY.get(k.type)
    body = ""
    if ops is not None and ops.to_text is not None:
        try:
            body = ops.to_text(k)
        except (FormatError, struct.error, ValueError, UnicodeError) as e:
            body = f"<invalid value: {e}>"
    elif k.val:
        body = k.val.hex()
    return f"{head}: {body}" if body else head


def key_to_json(k: Key, btree_id: int | None = None) -> dict:
    out = {"type": type_name(k.type), "pos": {"inode": k.pos[0], "offset": k.pos[1],
                                             "snapshot": k.pos[2]}}
    if btree_id is not None:
        out = {"btree": btree_name(btree_id), **out}
    if k.size:
        out["size"] = k.size
    if k.version:
        out["version"] = k.version
    ops = REGISTRY.get(k.type)
    if ops is not None and ops.to_json is not None:
        try:
            out["value"] = ops.to_json(k)
        except (FormatError, struct.error, ValueError, UnicodeError) as e:
            out["value"] = {"invalid": str(e), "raw": k.val.hex()}
    elif k.val:
        out["value"] = {"raw": k.val.hex()}
    return out


def filter_visible(keys, visible, *, whiteouts: bool = False):
    """The keys a snapshot sees, from a position-ordered stream of keys.

    For each (inode, offset) the first key whose snapshot is in `visible` (the
    reading snapshot and its ancestors) wins: with snapshot ids descending from
    the root, that is the nearest version. A winning whiteout hides the older
    versions; it is yielded only if `whiteouts` (hashed btrees need to see
    hash_whiteouts to keep probing).
    """
    last_inode = last_offset = None
    for k in keys:
        inode, offset, snap = k.pos
        if offset == last_offset and inode == last_inode:
            continue
        if snap not in visible:
            continue
        last_inode, last_offset = inode, offset
        if k.type <= 2 and not whiteouts:   # deleted, whiteout, hash_whiteout
            continue
        yield k
