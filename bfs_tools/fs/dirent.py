"""Dirent values (dirents btree, key at (dir inum, hash slot, snapshot))."""

from __future__ import annotations

from collections import namedtuple

from ..codec import record
from ..formats.constants import NAME_MAX
from ..formats.ids import DirentType, KeyType
from ..keys import Key, Pos, register

DirentHead = record("DirentValue")


# collections.namedtuple rather than typing.NamedTuple: typing costs ~3 ms of
# every command's start-up.
class Dirent(namedtuple("Dirent", "target d_type name")):
    """target: the inode number (subvol dirents: child | parent << 32)."""

    __slots__ = ()

    @property
    def is_subvol(self) -> bool:
        return self.d_type == DirentType.subvol

    @property
    def child_subvol(self) -> int:
        return self.target & 0xFFFFFFFF

    @property
    def parent_subvol(self) -> int:
        return self.target >> 32

    def pack(self) -> bytes:
        return DirentHead(self.target, self.d_type).pack() + self.name


def decode_dirent(val: bytes) -> Dirent:
    h = DirentHead.unpack(val)
    return Dirent(h.target, h.d_type, val[DirentHead.SIZE:])


def dirent_key(pos: Pos, d: Dirent) -> Key:
    return Key(pos, KeyType.dirent, d.pack())


def name_problem(name: bytes) -> str | None:
    """Why `name` cannot be a directory entry name, or None."""
    if not name:
        return "empty name"
    if len(name) > NAME_MAX:
        return f"name longer than {NAME_MAX} bytes"
    if name in (b".", b".."):
        return f"name {name.decode()!r} is reserved"
    # (byte values: `47 in name` is ~5x faster than `b"/" in name`, and every
    # lookup, create and check of a dirent asks)
    if 0x2F in name:
        return "name contains '/'"
    if 0 in name:
        return "name contains NUL"
    return None


def _type_name(t: int) -> str:
    try:
        return DirentType(t).name
    except ValueError:
        return f"unknown({t})"


# membership of the enum's values: a set lookup, where `x in iter(Enum)` walks every member
_DTYPES = frozenset(DirentType)


def _validate(btree_id: int, k: Key) -> str | None:
    if len(k.val) < DirentHead.SIZE:
        return "dirent value too short"
    d = decode_dirent(k.val)
    problem = name_problem(d.name)
    if problem:
        return problem
    if d.d_type not in _DTYPES or d.d_type == DirentType.unknown:
        return f"invalid dirent type {d.d_type}"
    return None


def _to_text(k: Key) -> str:
    d = decode_dirent(k.val)
    target = (f"subvol {d.child_subvol} (parent {d.parent_subvol})" if d.is_subvol
              else f"inum {d.target}")
    return f"{d.name.decode('utf-8', 'backslashreplace')!r} -> {target} type {_type_name(d.d_type)}"


def _to_json(k: Key) -> dict:
    d = decode_dirent(k.val)
    out = {"name": d.name.decode("utf-8", "surrogateescape"), "type": _type_name(d.d_type)}
    if d.is_subvol:
        out["subvol"] = d.child_subvol
        out["parent_subvol"] = d.parent_subvol
    else:
        out["inum"] = d.target
    try:
        d.name.decode("utf-8")
    except UnicodeDecodeError:
        out["name_hex"] = d.name.hex()
        out["name"] = d.name.decode("utf-8", "backslashreplace")
    return out


register(KeyType.dirent, validate=_validate, to_text=_to_text, to_json=_to_json)
