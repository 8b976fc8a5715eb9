"""Snapshot, snapshot tree and subvolume values (formats/snapshot.py)."""

from __future__ import annotations

from ..codec import record
from ..formats.ids import KeyType, SnapshotFlags, SubvolumeFlags
from ..keys import Key, register

SnapshotValue = record("SnapshotValue")
SnapshotTreeValue = record("SnapshotTreeValue")
SubvolumeValue = record("SubvolumeValue")


class _Value:
    """Base of the decoded values below: __slots__ lists the fields in value
    order (to_json and equality go through it). Plain classes, not dataclasses:
    importing dataclasses costs every command ~20 ms of start-up."""

    __slots__ = ()

    def _astuple(self) -> tuple:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other):
        # snapshots/cleanup.py rewrites a snapshot only when it changed
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._astuple() == other._astuple()

    __hash__ = None   # mutable, compared by value

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{n}={getattr(self, n)!r}' for n in self.__slots__)})"


class Snapshot(_Value):
    __slots__ = ("id", "flags", "parent", "children_0", "children_1", "subvol", "tree", "depth",
                 "pad")

    def __init__(self, id: int, flags: int = 0, parent: int = 0, children_0: int = 0,
                 children_1: int = 0, subvol: int = 0, tree: int = 0, depth: int = 0,
                 pad: int = 0):
        self.id = id
        self.flags = flags
        self.parent = parent
        self.children_0 = children_0
        self.children_1 = children_1
        self.subvol = subvol
        self.tree = tree
        self.depth = depth
        self.pad = pad

    @property
    def children(self) -> list[int]:
        return [c for c in (self.children_0, self.children_1) if c]

    def key(self) -> Key:
        return Key((0, self.id, 0), KeyType.snapshot, SnapshotValue(
            self.flags, self.parent, self.children_0, self.children_1, self.subvol, self.tree,
            self.depth, 0).pack())


def decode_snapshot(k: Key) -> Snapshot:
    v = SnapshotValue.unpack(k.val)
    return Snapshot(k.pos[1], *v)


class SnapshotTree(_Value):
    __slots__ = ("id", "master_subvol", "root_snapshot")

    def __init__(self, id: int, master_subvol: int = 0, root_snapshot: int = 0):
        self.id = id
        self.master_subvol = master_subvol
        self.root_snapshot = root_snapshot

    def key(self) -> Key:
        return Key((0, self.id, 0), KeyType.snapshot_tree,
                   SnapshotTreeValue(self.master_subvol, self.root_snapshot).pack())


def decode_snapshot_tree(k: Key) -> SnapshotTree:
    v = SnapshotTreeValue.unpack(k.val)
    return SnapshotTree(k.pos[1], v.master_subvol, v.root_snapshot)


class Subvolume(_Value):
    __slots__ = ("id", "flags", "snapshot", "inode", "parent", "pad", "otime_sec", "otime_nsec",
                 "pad2")

    def __init__(self, id: int, flags: int = 0, snapshot: int = 0, inode: int = 0,
                 parent: int = 0, pad: int = 0, otime_sec: int = 0, otime_nsec: int = 0,
                 pad2: int = 0):
        self.id = id
        self.flags = flags
        self.snapshot = snapshot
        self.inode = inode
        self.parent = parent
        self.pad = pad
        self.otime_sec = otime_sec
        self.otime_nsec = otime_nsec
        self.pad2 = pad2

    @property
    def read_only(self) -> bool:
        return bool(self.flags & SubvolumeFlags.read_only)

    def key(self) -> Key:
        return Key((0, self.id, 0), KeyType.subvolume, SubvolumeValue(
            self.flags, self.snapshot, self.inode, self.parent, 0, self.otime_sec,
            self.otime_nsec, 0).pack())


def decode_subvolume(k: Key) -> Subvolume:
    v = SubvolumeValue.unpack(k.val)
    return Subvolume(k.pos[1], *v)


def _flags(value: int, enum) -> str:
    names = [m.name for m in enum if value & m]
    return ",".join(names) if names else "-"


def _size_check(rec):
    def validate(btree_id: int, k: Key) -> str | None:
        if len(k.val) != rec.SIZE:
            return f"value of {len(k.val)} bytes, expected {rec.SIZE}"
        if k.pos[0] != 0 or k.pos[1] == 0 or k.pos[2] != 0:
            return "position must be (0, id, 0) with id > 0"
        return None
    return validate


def _snapshot_text(k: Key) -> str:
    s = decode_snapshot(k)
    return (f"parent {s.parent} children {s.children_0},{s.children_1} subvol {s.subvol} "
            f"tree {s.tree} depth {s.depth} flags {_flags(s.flags, SnapshotFlags)}")


def _subvol_text(k: Key) -> str:
    s = decode_subvolume(k)
    return (f"snapshot {s.snapshot} root inode {s.inode} parent {s.parent} "
            f"flags {_flags(s.flags, SubvolumeFlags)}")


def _as_json(decode):
    def to_json(k: Key) -> dict:
        obj = decode(k)
        return {name: getattr(obj, name) for name in obj.__slots__ if not name.startswith("pad")}
    return to_json


register(KeyType.snapshot, validate=_size_check(SnapshotValue), to_text=_snapshot_text,
         to_json=_as_json(decode_snapshot))
register(KeyType.snapshot_tree, validate=_size_check(SnapshotTreeValue),
         to_text=lambda k: (lambda t: f"master subvol {t.master_subvol} root snapshot "
                                      f"{t.root_snapshot}")(decode_snapshot_tree(k)),
         to_json=_as_json(decode_snapshot_tree))
register(KeyType.subvolume, validate=_size_check(SubvolumeValue), to_text=_subvol_text,
         to_json=_as_json(decode_subvolume))
