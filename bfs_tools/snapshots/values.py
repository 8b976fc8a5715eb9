"""Snapshot, snapshot tree and subvolume values (formats/snapshot.py)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..codec import record
from ..formats.ids import KeyType, SnapshotFlags, SubvolumeFlags
from ..keys import Key, register

SnapshotValue = record("SnapshotValue")
SnapshotTreeValue = record("SnapshotTreeValue")
SubvolumeValue = record("SubvolumeValue")


@dataclass
class Snapshot:
    id: int
    flags: int = 0
    parent: int = 0
    children_0: int = 0
    children_1: int = 0
    subvol: int = 0
    tree: int = 0
    depth: int = 0
    pad: int = 0

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


@dataclass
class SnapshotTree:
    id: int
    master_subvol: int = 0
    root_snapshot: int = 0

    def key(self) -> Key:
        return Key((0, self.id, 0), KeyType.snapshot_tree,
                   SnapshotTreeValue(self.master_subvol, self.root_snapshot).pack())


def decode_snapshot_tree(k: Key) -> SnapshotTree:
    v = SnapshotTreeValue.unpack(k.val)
    return SnapshotTree(k.pos[1], v.master_subvol, v.root_snapshot)


@dataclass
class Subvolume:
    id: int
    flags: int = 0
    snapshot: int = 0
    inode: int = 0
    parent: int = 0
    pad: int = 0
    otime_sec: int = 0
    otime_nsec: int = 0
    pad2: int = 0

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
        return {f.name: getattr(obj, f.name) for f in fields(obj) if not f.name.startswith("pad")}
    return to_json


register(KeyType.snapshot, validate=_size_check(SnapshotValue), to_text=_snapshot_text,
         to_json=_as_json(decode_snapshot))
register(KeyType.snapshot_tree, validate=_size_check(SnapshotTreeValue),
         to_text=lambda k: (lambda t: f"master subvol {t.master_subvol} root snapshot "
                                      f"{t.root_snapshot}")(decode_snapshot_tree(k)),
         to_json=_as_json(decode_snapshot_tree))
register(KeyType.subvolume, validate=_size_check(SubvolumeValue), to_text=_subvol_text,
         to_json=_as_json(decode_subvolume))
