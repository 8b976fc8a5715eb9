"""Xattr values (xattrs btree, key at (inum, hash slot, snapshot))."""

from __future__ import annotations

from collections import namedtuple

from ..codec import record
from ..formats.ids import KeyType, XattrType
from ..keys import Key, Pos, register

XattrHead = record("XattrValue")

PREFIXES = {XattrType.user: b"user.", XattrType.trusted: b"trusted.",
            XattrType.security: b"security.", XattrType.system: b"system."}


# collections.namedtuple rather than typing.NamedTuple: typing costs ~3 ms of
# every command's start-up.
class Xattr(namedtuple("Xattr", "x_type name value")):
    """name: without the namespace prefix (x_type says which)."""

    __slots__ = ()

    @property
    def full_name(self) -> bytes:
        return PREFIXES.get(self.x_type, b"") + self.name

    def pack(self) -> bytes:
        return XattrHead(self.x_type, len(self.name), len(self.value)).pack() + self.name + self.value


def split_name(full: bytes) -> tuple[int, bytes] | None:
    for t, prefix in PREFIXES.items():
        if full.startswith(prefix) and len(full) > len(prefix):
            return t, full[len(prefix):]
    return None


def decode_xattr(val: bytes) -> Xattr:
    from ..errors import FormatError

    h = XattrHead.unpack(val)
    end = XattrHead.SIZE + h.name_len + h.val_len
    if end != len(val):
        raise FormatError(f"xattr value length mismatch ({end} != {len(val)})")
    name = val[XattrHead.SIZE:XattrHead.SIZE + h.name_len]
    return Xattr(h.x_type, name, val[XattrHead.SIZE + h.name_len:end])


def xattr_key(pos: Pos, x: Xattr) -> Key:
    return Key(pos, KeyType.xattr, x.pack())


# membership of the enum's values: a set lookup, where `x in iter(Enum)` walks every member
_XATTR_TYPES = frozenset(XattrType)


def _validate(btree_id: int, k: Key) -> str | None:
    x = decode_xattr(k.val)
    if x.x_type not in _XATTR_TYPES:
        return f"unknown xattr namespace {x.x_type}"
    if not x.name:
        return "empty xattr name"
    return None


def _to_text(k: Key) -> str:
    x = decode_xattr(k.val)
    return f"{x.full_name.decode('utf-8', 'backslashreplace')} ({len(x.value)} bytes)"


def _to_json(k: Key) -> dict:
    x = decode_xattr(k.val)
    return {"name": x.full_name.decode("utf-8", "backslashreplace"), "value": x.value.hex()}


register(KeyType.xattr, validate=_validate, to_text=_to_text, to_json=_to_json)
