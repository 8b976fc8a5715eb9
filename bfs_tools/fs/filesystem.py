"""The filesystem: paths, inodes, directories, links, data and xattrs on a store.

Every object is reached through a subvolume: a path walk starts at the root
subvolume and enters another one at each dirent of type subvol. Inside a
subvolume every read sees the keys of its current snapshot and that snapshot's
ancestors (nearest version wins) and every write goes in at its snapshot,
with whiteouts where an ancestor's key would otherwise show through. Each
operation below is one transaction (rename included), so it is atomic.

    with Filesystem.open("disk.img", write=True) as fs:
        d = fs.resolve("/etc")
        fs.create_file(d.where, b"motd", data=b"hello\\n")
"""

from __future__ import annotations

import os
import posixpath
import stat
import time
from collections.abc import Iterator

from ..errors import (
    CorruptionError,
    CrossDeviceError,
    ExistsError,
    InvalidNameError,
    IsADirError,
    NotADirError,
    NotEmptyError,
    NotFoundError,
    ReadOnlyError,
    UsageError,
)
from ..formats.constants import ROOT_SUBVOL, SYMLINK_MAX, U32_MAX, U64_MAX
from ..formats.fsck_errors import BY_NAME as ERR
from ..formats.ids import BtreeId, DirentType, KeyType
from ..keys import Key, filter_visible
from ..snapshots.table import snapshot_table
from ..snapshots.values import Subvolume, decode_subvolume
from ..store import Store
from . import hashed
from .data import DataWriter, drop_all, read_range, truncate_range, write_range
from .dirent import Dirent, DirentHead, decode_dirent, dirent_key, name_problem
from .inode import Inode, decode_inode, inode_pos
from .strhash import name_hash
from .xattr import Xattr, decode_xattr, split_name, xattr_key

D, INODES, X = BtreeId.dirents, BtreeId.inodes, BtreeId.xattrs
_unpack_dirent_head = DirentHead.STRUCT.unpack_from     # (target, d_type); the name follows
_DIRENT_HEAD = DirentHead.SIZE
MAX_SYMLINK_FOLLOW = 40


def now() -> tuple[int, int]:
    return divmod(time.time_ns(), 1_000_000_000)


DTYPES = {stat.S_IFREG: DirentType.reg, stat.S_IFDIR: DirentType.dir,
           stat.S_IFLNK: DirentType.lnk, stat.S_IFCHR: DirentType.chr,
           stat.S_IFBLK: DirentType.blk, stat.S_IFIFO: DirentType.fifo,
           stat.S_IFSOCK: DirentType.sock}


def dtype_of(mode: int) -> int:
    return DTYPES.get(stat.S_IFMT(mode), DirentType.unknown)


# Where, Entry and Resolved are plain classes, not dataclasses: importing
# dataclasses costs every command ~20 ms of start-up.
class Where:
    """An inode as seen through a subvolume: (subvol, its snapshot, inum).
    Immutable by convention; compared and hashed by value."""

    __slots__ = ("subvol", "snapshot", "inum")

    def __init__(self, subvol: int, snapshot: int, inum: int):
        self.subvol = subvol
        self.snapshot = snapshot
        self.inum = inum

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return (self.subvol == other.subvol and self.snapshot == other.snapshot
                and self.inum == other.inum)

    def __hash__(self) -> int:
        return hash((self.subvol, self.snapshot, self.inum))

    def __repr__(self) -> str:
        return f"Where(subvol={self.subvol!r}, snapshot={self.snapshot!r}, inum={self.inum!r})"


class Entry:
    """A name in a directory: the dirent, and where its target lives."""

    __slots__ = ("name", "dirent", "key", "where")

    def __init__(self, name: bytes, dirent: Dirent, key: Key, where: Where):
        self.name = name
        self.dirent = dirent
        self.key = key
        self.where = where


class Resolved:
    __slots__ = ("path", "where", "inode", "parent", "name", "entry")

    def __init__(self, path: str, where: Where, inode: Inode, parent: Where | None, name: bytes,
                 entry: Entry | None):
        self.path = path
        self.where = where
        self.inode = inode
        self.parent = parent    # None for "/"
        self.name = name        # last component (b"" for "/")
        self.entry = entry


def check_name(name: bytes) -> None:
    problem = name_problem(name)
    if problem:
        raise InvalidNameError(f"invalid name {name!r}: {problem}")


def split_path(path: str) -> list[bytes]:
    """Absolute path -> components ('.' and '..' resolved lexically)."""
    if not path.startswith("/"):
        raise UsageError(f"path {path!r} must be absolute (start with /)")
    if "\0" in path:
        raise InvalidNameError("path contains NUL")
    norm = posixpath.normpath(path)
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    parts = [p for p in norm.split("/") if p]
    out = [os.fsencode(p) for p in parts]
    for p in out:
        if len(p) > 255:
            raise InvalidNameError(f"name {p[:32]!r}... is longer than 255 bytes")
    return out


class Filesystem:
    def __init__(self, store: Store):
        self.store = store
        self.btrees = store.btrees
        self.inline_max = store.sb.inline_data_max

    @classmethod
    def open(cls, target, *, write: bool = False) -> Filesystem:
        fs = cls(Store.open(target, write=write))
        if write:
            fs.finish_snapshot_deletion()
        return fs

    def finish_snapshot_deletion(self) -> None:
        """Resume an interrupted snapshot deletion (committed batches)."""
        from ..snapshots.cleanup import cleanup_dead_snapshots, pending_work

        try:
            if pending_work(self.btrees):
                cleanup_dead_snapshots(self)
        except BaseException:
            self.store.abort()
            raise

    def close(self) -> None:
        self.store.close()

    def abort(self) -> None:
        self.store.abort()

    def __enter__(self) -> Filesystem:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # ------------------------------------------------------------------ snapshots

    def visible(self, snapshot: int) -> frozenset[int]:
        return snapshot_table(self.store).ancestors(snapshot)

    def subvolume(self, subvol_id: int, src=None) -> Subvolume:
        k = (src or self.btrees).get(BtreeId.subvolumes, (0, subvol_id, 0))
        if k is None:
            raise CorruptionError(f"subvolume {subvol_id} does not exist",
                                  ERR["dirent_to_subvol_bad"].id)
        return decode_subvolume(k)

    def root(self) -> Where:
        sv = self.subvolume(ROOT_SUBVOL)
        return Where(sv.id, sv.snapshot, sv.inode)

    def where_of_subvol(self, subvol_id: int, src=None) -> Where:
        sv = self.subvolume(subvol_id, src)
        return Where(sv.id, sv.snapshot, sv.inode)

    def check_writable(self, where: Where, src=None) -> None:
        if self.store.read_only:
            raise ReadOnlyError(f"{self.store.dev.name}: opened read-only")
        if self.subvolume(where.subvol, src).read_only:
            raise ReadOnlyError("read-only snapshot: writes are refused")

    # ------------------------------------------------------------------ inodes

    def get_inode(self, where: Where, src=None) -> Inode | None:
        src = src or self.btrees
        it = src.iter(INODES, inode_pos(where.inum, 0), inode_pos(where.inum, U32_MAX))
        return visible_inode(it, where, self.visible(where.snapshot))

    def inode(self, where: Where, src=None) -> Inode:
        ino = self.get_inode(where, src)
        if ino is None:
            raise NotFoundError(f"inode {where.inum} does not exist in snapshot {where.snapshot}")
        return ino

    def put_inode(self, trans, where: Where, inode: Inode) -> None:
        inode.snapshot = where.snapshot
        trans.update(INODES, inode.key(where.snapshot))

    def delete_inode(self, trans, where: Where) -> None:
        """Remove the inode key from the snapshot's view (whiteout over ancestors)."""
        visible = self.visible(where.snapshot)
        older = any(k.pos[2] != where.snapshot and k.pos[2] in visible
                    for k in trans.iter(INODES, inode_pos(where.inum, 0),
                                        inode_pos(where.inum, U32_MAX)))
        pos = inode_pos(where.inum, where.snapshot)
        if older:
            trans.update(INODES, Key(pos, KeyType.whiteout))
        else:
            trans.delete(INODES, pos)

    def alloc_inum(self, trans) -> int:
        nxt = self.store.cache.get("next_inum")
        if nxt is None:
            last = trans.peek_prev(INODES, (0, U64_MAX, U32_MAX))
            nxt = (last.pos[1] + 1) if last is not None else 4097
            nxt = max(nxt, 4097)
        self.store.cache["next_inum"] = nxt + 1
        return nxt

    def new_inode(self, trans, where_dir: Where, mode: int, *, uid: int | None = None,
                  gid: int | None = None, rdev: int = 0, times=None) -> Inode:
        sec, nsec = now()
        inum = self.alloc_inum(trans)
        a = m = c = b = (sec, nsec)
        if times is not None:
            a, m, c, b = times
        return Inode(inum, mode=mode, uid=os.getuid() if uid is None else uid,
                     gid=os.getgid() if gid is None else gid,
                     nlink=2 if stat.S_ISDIR(mode) else 1, rdev=rdev,
                     atime_sec=a[0], atime_nsec=a[1], mtime_sec=m[0], mtime_nsec=m[1],
                     ctime_sec=c[0], ctime_nsec=c[1], btime_sec=b[0], btime_nsec=b[1],
                     hash_seed=int.from_bytes(os.urandom(8), "little"),
                     str_hash=self.store.sb.str_hash_type,
                     data_csum=self.store.sb.data_csum_type, snapshot=where_dir.snapshot)

    # ------------------------------------------------------------------ directories

    def _dirent_matches(self, name: bytes, subvol: int = 0):
        def matches(k: Key) -> bool:
            if k.type != KeyType.dirent:
                return False
            d = decode_dirent(k.val)
            return d.name == name and not (subvol and _hidden_subvol(d, subvol))
        return matches

    def lookup(self, dir_where: Where, dir_inode: Inode, name: bytes, src=None) -> Entry | None:
        src = src or self.btrees
        h = name_hash(name, dir_inode.hash_seed)
        k = hashed.lookup(src, D, dir_where.inum, h, self.visible(dir_where.snapshot),
                          self._dirent_matches(name, dir_where.subvol))
        if k is None:
            return None
        return self._entry(dir_where, k, src)

    def _entry(self, dir_where: Where, k: Key, src=None, d: Dirent | None = None) -> Entry:
        if d is None:
            d = decode_dirent(k.val)
        if d.is_subvol:
            where = self.where_of_subvol(d.child_subvol, src)
        else:
            where = Where(dir_where.subvol, dir_where.snapshot, d.target)
        return Entry(d.name, d, k, where)

    def readdir(self, dir_where: Where, src=None) -> list[Entry]:
        src = src or self.btrees
        visible = self.visible(dir_where.snapshot)
        out = []
        for k in hashed.iter_entries(src, D, dir_where.inum, visible):
            if k.type == KeyType.dirent:
                d = decode_dirent(k.val)
                if not _hidden_subvol(d, dir_where.subvol):
                    out.append(self._entry(dir_where, k, src, d))
        return out

    def read_dirs(self, dirs: list[Where], trans) -> Iterator[list[tuple[Where, bytes]]]:
        """readdir of many directories (`dirs`, in ascending inode order) in one
        walk of the dirents btree, through the transaction `trans`: for each, its
        entries as (where the target lives, name), in slot order. No Entry or
        Dirent objects: a tree copy reads thousands of entries this way."""
        ranges = [((w.inum, 0, 0), (w.inum, U64_MAX, U32_MAX)) for w in dirs]
        views: dict[int, frozenset] = {}
        dirent, subvol_type = KeyType.dirent, DirentType.subvol
        for w, keys in zip(dirs, trans.read_ranges(D, ranges), strict=True):
            visible = views.get(w.snapshot)
            if visible is None:
                visible = views[w.snapshot] = self.visible(w.snapshot)
            out = []
            for k in filter_visible(keys, visible):
                if k.type != dirent:
                    continue
                target, d_type = _unpack_dirent_head(k.val)
                if d_type == subvol_type:   # (readdir's rule and Where, for the rare kind)
                    d = decode_dirent(k.val)
                    if not _hidden_subvol(d, w.subvol):
                        e = self._entry(w, k, trans, d)
                        out.append((e.where, e.name))
                    continue
                out.append((Where(w.subvol, w.snapshot, target), k.val[_DIRENT_HEAD:]))
            yield out

    def is_empty_dir(self, dir_where: Where, src=None) -> bool:
        src = src or self.btrees
        visible = self.visible(dir_where.snapshot)
        for k in hashed.iter_entries(src, D, dir_where.inum, visible):
            if k.type == KeyType.dirent and not _hidden_subvol(decode_dirent(k.val),
                                                               dir_where.subvol):
                return False
        return True

    # ------------------------------------------------------------------ paths

    def resolve(self, path: str, *, follow: bool = True, src=None) -> Resolved:
        """Walk `path`; symlinks inside the image are followed (the last component
        only if `follow`), always relative to the image's root."""
        src = src or self.btrees
        components = split_path(path)
        for _ in range(MAX_SYMLINK_FOLLOW):
            where = self.root()
            inode = self.inode(where, src)
            parent: Where | None = None
            entry: Entry | None = None
            done = True
            for i, name in enumerate(components):
                if not inode.is_dir:
                    raise NotADirError(f"{_join(components[:i])}: not a directory")
                entry = self.lookup(where, inode, name, src)
                if entry is None:
                    raise NotFoundError(f"{_join(components[:i + 1])}: no such file or directory")
                parent, where = where, entry.where
                child = self.get_inode(where, src)
                if child is None:
                    raise CorruptionError(f"{_join(components[:i + 1])}: dirent points to "
                                          f"missing inode {where.inum}; run bfs check",
                                          ERR["dirent_target_missing"].id)
                inode = child
                last = i == len(components) - 1
                if inode.is_lnk and (follow or not last):
                    target = self.read_all(where, inode, _join(components[:i + 1]), src)
                    base = _join(components[:i])
                    new = target.decode("utf-8", "surrogateescape")
                    rest = b"/".join(components[i + 1:]).decode("utf-8", "surrogateescape")
                    joined = posixpath.join(base if not new.startswith("/") else "/", new, rest)
                    components = split_path(joined if joined.startswith("/") else "/" + joined)
                    done = False
                    break
            if done:
                name = components[-1] if components else b""
                return Resolved(_join(components), where, inode, parent, name, entry)
        raise UsageError(f"{path}: too many levels of symbolic links")

    def resolve_parent(self, path: str, src=None) -> tuple[Resolved, bytes]:
        """The directory that holds (or would hold) `path`'s last component."""
        components = split_path(path)
        if not components:
            raise UsageError("the root directory has no parent")
        name = components[-1]
        check_name(name)
        parent = self.resolve(_join(components[:-1]), src=src)
        if not parent.inode.is_dir:
            raise NotADirError(f"{parent.path}: not a directory")
        return parent, name

    # ------------------------------------------------------------------ creation

    def _add_dirent(self, trans, dir_where: Where, dir_inode: Inode, name: bytes,
                    target: int, d_type: int) -> int:
        h = name_hash(name, dir_inode.hash_seed)
        visible = self.visible(dir_where.snapshot)
        slot = hashed.find_slot(trans, D, dir_where.inum, h, visible)
        trans.update(D, dirent_key((dir_where.inum, slot, dir_where.snapshot),
                                   Dirent(target, d_type, name)))
        return slot

    def _touch_dir(self, trans, dir_where: Where, dir_inode: Inode, nlink_delta: int = 0) -> None:
        sec, nsec = now()
        dir_inode.mtime_sec = dir_inode.ctime_sec = sec
        dir_inode.mtime_nsec = dir_inode.ctime_nsec = nsec
        dir_inode.nlink += nlink_delta
        self.put_inode(trans, dir_where, dir_inode)

    def create(self, parent: Where, name: bytes, mode: int, *, uid: int | None = None,
               gid: int | None = None, rdev: int = 0, times=None, data: bytes | None = None,
               symlink: bytes | None = None, trans=None, writer: DataWriter | None = None,
               touch_parent: bool = True) -> Where:
        """Create a file, directory, symlink or special file named `name` in `parent`."""
        check_name(name)
        own = trans is None
        t = trans or self.store.transaction()
        self.check_writable(parent, t)
        dir_inode = self.inode(parent, t)
        if not dir_inode.is_dir:
            raise NotADirError("parent is not a directory")
        if self.lookup(parent, dir_inode, name, t) is not None:
            raise ExistsError(f"{name.decode('utf-8', 'replace')}: already exists")
        inode = self.new_inode(t, parent, mode, uid=uid, gid=gid, rdev=rdev, times=times)
        where = Where(parent.subvol, parent.snapshot, inode.inum)
        slot = self._add_dirent(t, parent, dir_inode, name, inode.inum, dtype_of(mode))
        inode.dir, inode.dir_offset = parent.inum, slot
        content = symlink if symlink is not None else data
        if symlink is not None and len(symlink) > SYMLINK_MAX:
            raise InvalidNameError(f"symlink target longer than {SYMLINK_MAX} bytes")
        if content:
            w = writer or DataWriter(self.store, self.store.sb.data_csum_type)
            visible = self.visible(parent.snapshot)
            inode.sectors += write_range(t, w, inode, visible, 0, content, self.inline_max,
                                         name.decode("utf-8", "replace"))
            if writer is None:
                w.flush()
        self.put_inode(t, where, inode)
        if touch_parent:
            self._touch_dir(t, parent, dir_inode, 1 if stat.S_ISDIR(mode) else 0)
        elif stat.S_ISDIR(mode):
            dir_inode.nlink += 1
            self.put_inode(t, parent, dir_inode)
        if own:
            t.commit()
        return where

    def link(self, target: Where, parent: Where, name: bytes) -> None:
        check_name(name)
        if target.subvol != parent.subvol:
            raise CrossDeviceError("hard links cannot cross subvolumes")
        t = self.store.transaction()
        self.check_writable(parent, t)
        inode = self.inode(target, t)
        if inode.is_dir:
            raise IsADirError("hard links to directories are not allowed")
        dir_inode = self.inode(parent, t)
        if not dir_inode.is_dir:
            raise NotADirError("parent is not a directory")
        if self.lookup(parent, dir_inode, name, t) is not None:
            raise ExistsError(f"{name.decode('utf-8', 'replace')}: already exists")
        self._add_dirent(t, parent, dir_inode, name, inode.inum, dtype_of(inode.mode))
        inode.nlink += 1
        inode.ctime_sec, inode.ctime_nsec = now()
        self.put_inode(t, target, inode)
        self._touch_dir(t, parent, dir_inode)
        t.commit()

    # ------------------------------------------------------------------ removal

    def _drop_inode(self, trans, where: Where, inode: Inode) -> None:
        """The last link went: the inode, its data and its xattrs go."""
        visible = self.visible(where.snapshot)
        if not inode.is_dir:
            drop_all(trans, inode, visible)
        for k in list(hashed.iter_entries(trans, X, where.inum, visible)):
            hashed.delete(trans, X, k, where.snapshot, visible)
        self.delete_inode(trans, where)

    def _remove_entry(self, trans, parent: Where, dir_inode: Inode, entry: Entry) -> None:
        visible = self.visible(parent.snapshot)
        hashed.delete(trans, D, entry.key, parent.snapshot, visible)
        if entry.dirent.is_subvol:
            # Older versions of a subvolume dirent, at ancestor snapshots, are hidden in
            # every other view (_hidden_subvol): once gone from this one they name a
            # subvolume nobody reaches (and that may be deleted). They become hash
            # whiteouts, which keep the probe chains of the other views as they were.
            inum, slot, _ = entry.key.pos
            for k in list(trans.iter(D, (inum, slot, 0), (inum, slot, U32_MAX))):
                if (k.pos[2] != parent.snapshot and k.pos[2] in visible
                        and k.type == KeyType.dirent):
                    d = decode_dirent(k.val)
                    if d.is_subvol and d.target == entry.dirent.target:
                        trans.update(D, Key(k.pos, KeyType.hash_whiteout))

    def unlink(self, parent: Where, name: bytes, *, allow_dir: bool = False) -> None:
        """Remove a name (rm); directories only with allow_dir and only when empty."""
        t = self.store.transaction()
        self.check_writable(parent, t)
        dir_inode = self.inode(parent, t)
        entry = self.lookup(parent, dir_inode, name, t)
        if entry is None:
            raise NotFoundError(f"{name.decode('utf-8', 'replace')}: no such file or directory")
        if entry.dirent.is_subvol:
            raise IsADirError(f"{name.decode('utf-8', 'replace')}: is a subvolume; use "
                              "`bfs subvolume delete` or `bfs snapshot delete`")
        inode = self.inode(entry.where, t)
        if inode.is_dir:
            if not allow_dir:
                raise IsADirError(f"{name.decode('utf-8', 'replace')}: is a directory")
            if not self.is_empty_dir(entry.where, t):
                raise NotEmptyError(f"{name.decode('utf-8', 'replace')}: directory not empty")
        self._remove_entry(t, parent, dir_inode, entry)
        self._unref(t, entry.where, inode)
        self._touch_dir(t, parent, dir_inode, -1 if inode.is_dir else 0)
        t.commit()

    def _unref(self, trans, where: Where, inode: Inode) -> None:
        if inode.is_dir:
            self._drop_inode(trans, where, inode)
            return
        inode.nlink -= 1
        inode.ctime_sec, inode.ctime_nsec = now()
        if inode.nlink <= 0:
            self._drop_inode(trans, where, inode)
        else:
            if inode.nlink == 1:
                self._fix_backpointer(trans, where, inode)
            self.put_inode(trans, where, inode)

    def _fix_backpointer(self, trans, where: Where, inode: Inode) -> None:
        """A file down to one link: its backpointer must name that link. If it named
        a removed one, find the survivor (a scan of the dirents: only when the
        removed link was the one the backpointer named)."""
        visible = self.visible(where.snapshot)

        def names_it(k: Key | None) -> bool:
            return (k is not None and k.type == KeyType.dirent
                    and not decode_dirent(k.val).is_subvol
                    and decode_dirent(k.val).target == where.inum)

        if inode.dir and names_it(hashed._slot_keys(trans, D, inode.dir, inode.dir_offset,
                                                     visible)):
            return
        for k in filter_visible(trans.iter(D), visible):
            if names_it(k):
                inode.dir, inode.dir_offset = k.pos[0], k.pos[1]
                return

    def rename(self, src_parent: Where, src_name: bytes, dst_parent: Where, dst_name: bytes) -> None:
        """Atomic rename; replaces an existing destination like rename(2)."""
        check_name(dst_name)
        if src_parent.subvol != dst_parent.subvol:
            raise CrossDeviceError("cannot move between subvolumes")
        t = self.store.transaction()
        self.check_writable(dst_parent, t)
        sdir = self.inode(src_parent, t)
        entry = self.lookup(src_parent, sdir, src_name, t)
        if entry is None:
            raise NotFoundError(f"{src_name.decode('utf-8', 'replace')}: no such file or directory")
        same_dir = src_parent.inum == dst_parent.inum
        ddir = sdir if same_dir else self.inode(dst_parent, t)
        if not ddir.is_dir:
            raise NotADirError("destination parent is not a directory")
        moving_dir = entry.dirent.d_type in (DirentType.dir, DirentType.subvol)
        if moving_dir and not same_dir and self._is_ancestor_dir(entry.where, dst_parent, t):
            raise UsageError("cannot move a directory into itself")
        existing = self.lookup(dst_parent, ddir, dst_name, t)
        if existing is not None:
            if existing.where == entry.where:
                return  # same file: rename(2) does nothing
            if existing.dirent.is_subvol:
                raise IsADirError("destination is a subvolume")
            ex_inode = self.inode(existing.where, t)
            if moving_dir:
                if not ex_inode.is_dir:
                    raise NotADirError("cannot overwrite a non-directory with a directory")
                if not self.is_empty_dir(existing.where, t):
                    raise NotEmptyError("destination directory not empty")
            elif ex_inode.is_dir:
                raise IsADirError("cannot overwrite a directory with a non-directory")
            self._remove_entry(t, dst_parent, ddir, existing)
            self._unref(t, existing.where, ex_inode)
            if ex_inode.is_dir:
                ddir.nlink -= 1
        self._remove_entry(t, src_parent, sdir, entry)
        target = entry.dirent.target
        slot = self._add_dirent(t, dst_parent, ddir, dst_name, target, entry.dirent.d_type)
        if not entry.dirent.is_subvol:
            inode = self.inode(entry.where, t)
            inode.ctime_sec, inode.ctime_nsec = now()
            if inode.is_dir or inode.nlink == 1 or (inode.dir, inode.dir_offset) == (
                    src_parent.inum, entry.key.pos[1]):
                inode.dir, inode.dir_offset = dst_parent.inum, slot
            self.put_inode(t, entry.where, inode)
        else:
            # a subvolume's root knows where it is named (subvolume_path walks up
            # through it): moved with its dirent, even in a read-only snapshot (this is
            # the parent's namespace, as bcachefs' rename does)
            root = self.inode(entry.where, t)
            root.dir, root.dir_offset = dst_parent.inum, slot
            self.put_inode(t, entry.where, root)
        if not same_dir and moving_dir and not entry.dirent.is_subvol:
            # (a subvolume is not a subdirectory for nlink: bcachefs' is_subdir_for_nlink)
            sdir.nlink -= 1
            ddir.nlink += 1
        self._touch_dir(t, src_parent, sdir)
        if not same_dir:
            self._touch_dir(t, dst_parent, ddir)
        t.commit()

    def _is_ancestor_dir(self, anc: Where, d: Where, src) -> bool:
        """Is directory `anc` equal to or above directory `d` (same subvolume)?"""
        cur = d
        for _ in range(1 << 16):
            if cur.inum == anc.inum and cur.subvol == anc.subvol:
                return True
            ino = self.get_inode(cur, src)
            if ino is None or not ino.dir or cur.inum == self.where_of_subvol(cur.subvol, src).inum:
                return False
            cur = Where(cur.subvol, cur.snapshot, ino.dir)
        return False

    # ------------------------------------------------------------------ data

    def read_all(self, where: Where, inode: Inode, what: str, src=None) -> bytes:
        if inode.is_lnk and inode.size > SYMLINK_MAX:   # a damaged size must not size a buffer
            raise CorruptionError(f"{what}: symlink claims a {inode.size}-byte target (at most "
                                  f"{SYMLINK_MAX}); run bfs check")
        return read_range(self.store, where.inum, self.visible(where.snapshot), 0, inode.size,
                          what, src)

    def read(self, where: Where, inode: Inode, offset: int, length: int, what: str) -> bytes:
        length = max(0, min(length, inode.size - offset))
        return read_range(self.store, where.inum, self.visible(where.snapshot), offset, length,
                          what)

    def iter_read(self, where: Where, inode: Inode, what: str):
        # only cat streams: other commands do not import the stream reader
        from .stream import iter_read

        return iter_read(self.store, where.inum, self.visible(where.snapshot), inode.size, what)

    def write(self, where: Where, offset: int, data: bytes, what: str = "") -> None:
        self._edit_data(where, what, lambda t, w, inode, visible: write_range(
            t, w, inode, visible, offset, data, self.inline_max, what))

    def truncate(self, where: Where, size: int, what: str = "") -> None:
        self._edit_data(where, what, lambda t, w, inode, visible: truncate_range(
            t, w, inode, visible, size, self.inline_max, what))

    def _edit_data(self, where: Where, what: str, edit) -> None:
        """One transaction changing a file's data: edit(trans, writer, inode, visible)
        returns the change in the inode's sectors; mtime/ctime become now."""
        t = self.store.transaction()
        self.check_writable(where, t)
        inode = self.inode(where, t)
        if inode.is_dir:
            raise IsADirError(f"{what}: is a directory")
        w = DataWriter(self.store, inode.data_csum)
        inode.snapshot = where.snapshot
        inode.sectors += edit(t, w, inode, self.visible(where.snapshot))
        w.flush()
        inode.mtime_sec, inode.mtime_nsec = inode.ctime_sec, inode.ctime_nsec = now()
        self.put_inode(t, where, inode)
        t.commit()

    def replace_contents(self, where: Where, chunks, what: str = "") -> None:
        """New data for an existing file: written first, then switched in one transaction."""
        t = self.store.transaction()
        self.check_writable(where, t)
        inode = self.inode(where, t)
        if not inode.is_reg:
            raise IsADirError(f"{what}: not a regular file")
        from .populate import write_file_data

        w = DataWriter(self.store, inode.data_csum)
        inode.snapshot = where.snapshot
        write_file_data(t, w, inode, self.visible(where.snapshot), chunks, self.inline_max,
                        what, replace=True)
        w.flush()
        inode.mtime_sec, inode.mtime_nsec = inode.ctime_sec, inode.ctime_nsec = now()
        self.put_inode(t, where, inode)
        t.commit()

    # ------------------------------------------------------------------ attributes

    def setattr(self, where: Where, *, mode: int | None = None, uid: int | None = None,
                gid: int | None = None, atime=None, mtime=None, trans=None) -> None:
        t = trans or self.store.transaction()
        self.check_writable(where, t)
        inode = self.inode(where, t)
        if mode is not None:
            inode.mode = stat.S_IFMT(inode.mode) | stat.S_IMODE(mode)
        if uid is not None:
            inode.uid = uid
        if gid is not None:
            inode.gid = gid
        if atime is not None:
            inode.atime_sec, inode.atime_nsec = atime
        if mtime is not None:
            inode.mtime_sec, inode.mtime_nsec = mtime
        inode.ctime_sec, inode.ctime_nsec = now()
        self.put_inode(t, where, inode)
        if trans is None:
            t.commit()

    def listxattr(self, where: Where, src=None) -> list[Xattr]:
        src = src or self.btrees
        return [decode_xattr(k.val) for k in hashed.iter_entries(
            src, X, where.inum, self.visible(where.snapshot)) if k.type == KeyType.xattr]

    def _xattr_lookup(self, src, where: Where, inode: Inode, x_type: int, name: bytes):
        def matches(k: Key) -> bool:
            if k.type != KeyType.xattr:
                return False
            x = decode_xattr(k.val)
            return x.x_type == x_type and x.name == name

        h = name_hash(bytes([x_type]) + name, inode.hash_seed)
        return hashed.lookup(src, X, where.inum, h, self.visible(where.snapshot), matches), h

    def getxattr(self, where: Where, full_name: bytes) -> bytes | None:
        parsed = split_name(full_name)
        if parsed is None:
            return None
        inode = self.inode(where)
        k, _ = self._xattr_lookup(self.btrees, where, inode, parsed[0], parsed[1])
        return decode_xattr(k.val).value if k is not None else None

    def setxattr(self, where: Where, full_name: bytes, value: bytes, trans=None) -> None:
        from ..formats.constants import XATTR_NAME_MAX, XATTR_VALUE_MAX

        parsed = split_name(full_name)
        if parsed is None:
            raise InvalidNameError(f"xattr name {full_name!r} has no known namespace prefix")
        x_type, name = parsed
        if len(name) > XATTR_NAME_MAX or len(value) > XATTR_VALUE_MAX:
            raise InvalidNameError(f"xattr {full_name!r} too long")
        t = trans or self.store.transaction()
        self.check_writable(where, t)
        inode = self.inode(where, t)
        visible = self.visible(where.snapshot)
        existing, h = self._xattr_lookup(t, where, inode, x_type, name)
        if existing is not None:
            slot = existing.pos[1]
        else:
            slot = hashed.find_slot(t, X, where.inum, h, visible)
        t.update(X, xattr_key((where.inum, slot, where.snapshot), Xattr(x_type, name, value)))
        if trans is None:
            inode.ctime_sec, inode.ctime_nsec = now()
            self.put_inode(t, where, inode)
            t.commit()

    def removexattr(self, where: Where, full_name: bytes) -> None:
        parsed = split_name(full_name)
        if parsed is None:
            raise NotFoundError(f"no xattr {full_name!r}")
        t = self.store.transaction()
        self.check_writable(where, t)
        inode = self.inode(where, t)
        k, _ = self._xattr_lookup(t, where, inode, parsed[0], parsed[1])
        if k is None:
            raise NotFoundError(f"no xattr {full_name!r}")
        hashed.delete(t, X, k, where.snapshot, self.visible(where.snapshot))
        inode.ctime_sec, inode.ctime_nsec = now()
        self.put_inode(t, where, inode)
        t.commit()


def visible_inode(keys, where: Where, visible) -> Inode | None:
    """The inode `where` names, from the keys of its inode number (all snapshots,
    in order) and its snapshot's view `visible`."""
    for k in filter_visible(keys, visible):
        if k.type != KeyType.inode:
            return None
        ino = decode_inode(k)
        # seen from (and written back to) where.snapshot, whichever key it came from
        ino.snapshot = where.snapshot
        return ino
    return None


def _hidden_subvol(d: Dirent, subvol: int) -> bool:
    """A subvolume's dirent belongs to the subvolume it was made in: a snapshot of
    that subvolume inherits the key but does not show it (bcachefs' d_parent_subvol
    test), or the snapshot would reach, and could delete, the original's child."""
    return d.is_subvol and d.parent_subvol != subvol


def _join(components: list[bytes]) -> str:
    return "/" + "/".join(c.decode("utf-8", "surrogateescape") for c in components)
