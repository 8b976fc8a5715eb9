"""Inode values (inodes btree, key at (0, inum, snapshot)) and their trigger.

The trigger keeps the nr_inodes accounting counter; everything else about an
inode is the filesystem layer's business (fs/).
"""

from __future__ import annotations

import stat
import struct
from operator import attrgetter

from ..codec import field_unpacker, record
from ..errors import FormatError
from ..formats.ids import AccountingType, KeyType
from ..keys import Key, Pos, register, register_trigger

InodeValue = record("InodeValue")
_PACK = InodeValue.STRUCT.pack
_FIELDS = attrgetter(*InodeValue._fields)


class Inode:
    """A decoded inode value plus where it was read from. A plain class, not a
    dataclass: importing dataclasses costs every command ~20 ms of start-up.
    __slots__ lists the fields (copy, dump and stat --json go through it): the
    inode number, the value's fields in value order, then two not stored."""

    __slots__ = (
        "inum", "mode", "flags", "uid", "gid", "nlink", "generation", "size", "sectors",
        "atime_sec", "atime_nsec", "mtime_sec", "mtime_nsec", "ctime_sec", "ctime_nsec",
        "btime_sec", "btime_nsec", "rdev", "hash_seed", "str_hash", "data_csum", "pad", "subvol",
        "dir", "dir_offset",
        "snapshot",        # snapshot it is seen from and written to (not stored in the value)
        "key_snapshot")    # snapshot of the key it was read from (an ancestor's, or its own)

    def __init__(self, inum: int, mode: int = 0, flags: int = 0, uid: int = 0, gid: int = 0,
                 nlink: int = 0, generation: int = 0, size: int = 0, sectors: int = 0,
                 atime_sec: int = 0, atime_nsec: int = 0, mtime_sec: int = 0,
                 mtime_nsec: int = 0, ctime_sec: int = 0, ctime_nsec: int = 0,
                 btime_sec: int = 0, btime_nsec: int = 0, rdev: int = 0, hash_seed: int = 0,
                 str_hash: int = 0, data_csum: int = 0, pad: int = 0, subvol: int = 0,
                 dir: int = 0, dir_offset: int = 0, snapshot: int = 0, key_snapshot: int = 0):
        self.inum = inum
        self.mode = mode
        self.flags = flags
        self.uid = uid
        self.gid = gid
        self.nlink = nlink
        self.generation = generation
        self.size = size
        self.sectors = sectors
        self.atime_sec = atime_sec
        self.atime_nsec = atime_nsec
        self.mtime_sec = mtime_sec
        self.mtime_nsec = mtime_nsec
        self.ctime_sec = ctime_sec
        self.ctime_nsec = ctime_nsec
        self.btime_sec = btime_sec
        self.btime_nsec = btime_nsec
        self.rdev = rdev
        self.hash_seed = hash_seed
        self.str_hash = str_hash
        self.data_csum = data_csum
        self.pad = pad
        self.subvol = subvol
        self.dir = dir
        self.dir_offset = dir_offset
        self.snapshot = snapshot
        self.key_snapshot = key_snapshot

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    @property
    def is_reg(self) -> bool:
        return stat.S_ISREG(self.mode)

    @property
    def is_lnk(self) -> bool:
        return stat.S_ISLNK(self.mode)

    def fields(self) -> tuple:
        """The stored fields, as an InodeValue."""
        return tuple.__new__(InodeValue, _FIELDS(self))

    def pack(self) -> bytes:
        try:
            return _PACK(*_FIELDS(self))
        except struct.error as e:
            raise FormatError(f"inode {self.inum}: cannot encode: {e}") from None

    def key(self, snapshot: int | None = None) -> Key:
        snap = self.snapshot if snapshot is None else snapshot
        return Key(inode_pos(self.inum, snap), KeyType.inode, self.pack())

    def copy(self) -> Inode:
        return Inode(*(getattr(self, name) for name in Inode.__slots__))


def inode_pos(inum: int, snapshot: int) -> Pos:
    return (0, inum, snapshot)


def decode_inode(k: Key) -> Inode:
    v = InodeValue.unpack(k.val)
    return Inode(k.pos[1], *v, snapshot=k.pos[2], key_snapshot=k.pos[2])


def _inode_trigger(trans, btree_id: int, old: Key | None, new: Key | None) -> None:
    delta = (1 if new is not None and new.type == KeyType.inode else 0) - (
        1 if old is not None and old.type == KeyType.inode else 0)
    if delta:
        trans.acct((AccountingType.nr_inodes, 0, 0), [delta])


_FILE_TYPES = {stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFCHR, stat.S_IFBLK,
               stat.S_IFIFO, stat.S_IFSOCK}


_NSEC = ("atime_nsec", "mtime_nsec", "ctime_nsec", "btime_nsec")
_validated_fields = field_unpacker("InodeValue", "mode", *_NSEC)   # check validates every inode


def _validate(btree_id: int, k: Key) -> str | None:
    if len(k.val) != InodeValue.SIZE:
        return f"inode value of {len(k.val)} bytes, expected {InodeValue.SIZE}"
    v = _validated_fields(k.val)
    # (check validates every inode: the mask and four comparisons, not
    # stat.S_IFMT and max(), took 83 -> 51 ms for 100,000 inodes)
    if v[0] & 0o170000 not in _FILE_TYPES:
        return f"invalid file type in mode {v[0]:o}"
    if not (v[1] < 1_000_000_000 and v[2] < 1_000_000_000 and v[3] < 1_000_000_000
            and v[4] < 1_000_000_000):
        return f"{_NSEC[next(i for i, ns in enumerate(v[1:]) if ns >= 1_000_000_000)]} out of range"
    if k.pos[0] != 0 or k.pos[1] == 0:
        return "inode key outside (0, inum)"
    return None


def _to_text(k: Key) -> str:
    i = decode_inode(k)
    return (f"mode {i.mode:o} uid {i.uid} gid {i.gid} nlink {i.nlink} size {i.size} "
            f"sectors {i.sectors} mtime {i.mtime_sec}.{i.mtime_nsec:09d}"
            + (f" subvol {i.subvol}" if i.subvol else "") + (f" dir {i.dir}" if i.dir else ""))


def _to_json(k: Key) -> dict:
    i = decode_inode(k)
    out = {name: getattr(i, name) for name in Inode.__slots__
           if name not in ("pad", "snapshot", "key_snapshot")}
    out["mode"] = f"{i.mode:o}"
    return out


register(KeyType.inode, validate=_validate, to_text=_to_text, to_json=_to_json)
register_trigger(KeyType.inode, _inode_trigger)
