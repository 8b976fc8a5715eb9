"""Copying a host directory tree into the filesystem (format --source, put -r).

Preserves modes, owners, times (ns), symlinks, hard links (one inode, keyed by
the host's (st_dev, st_ino), so links across host filesystems stay separate
files), device nodes/fifos/sockets, sparse holes (SEEK_DATA/SEEK_HOLE) and
xattrs where the host lets us read them. Unreadable files are reported and
skipped; everything else is still copied.

Speed: file data is read straight into one reused buffer at the place it goes
on the device, checksummed there and written sequentially into freshly
allocated buckets with one pwrite per run of contiguous data (DataWriter), no
per-file fsync, and the metadata goes in large transactions (unjournalled when
large: the btree nodes are written before the commit point instead).
"""

from __future__ import annotations

import errno
import os
import random
from stat import S_IFBLK, S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG

from ..errors import ExistsError, InvalidNameError, NotADirError
from ..formats.ids import BtreeId
from . import hashed
from .data import END_OF_FILE, SECTOR, DataWriter, data_keys, inline_key, replace_range
from .dirent import Dirent, dirent_key, name_problem
from .filesystem import Filesystem, Where, check_name, dtype_of, now
from .inode import Inode
from .strhash import name_hash
from .xattr import Xattr, split_name, xattr_key

BATCH_ENTRIES = 4000
BATCH_BYTES = 256 << 20
READ_CHUNK = 4 << 20
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


class Report:
    """What an import did. A plain class: importing dataclasses costs ~14 ms of
    start-up, and `bfs cp` imports this module."""

    __slots__ = ("files", "dirs", "symlinks", "special", "hardlinks", "bytes", "xattrs",
                 "problems")

    def __init__(self):
        self.files = self.dirs = self.symlinks = self.special = self.hardlinks = 0
        self.bytes = self.xattrs = 0
        self.problems: list[str] = []

    def as_dict(self) -> dict:
        return {"files": self.files, "dirs": self.dirs, "symlinks": self.symlinks,
                "special": self.special, "hardlinks": self.hardlinks, "bytes": self.bytes,
                "xattrs": self.xattrs, "problems": list(self.problems)}


def _times(st: os.stat_result):
    """(atime, mtime, ctime, btime) as (seconds, nanoseconds); a host file's birth
    time is not in os.stat on Linux: the ctime stands for it."""
    a = divmod(st.st_atime_ns, 1_000_000_000)
    m = divmod(st.st_mtime_ns, 1_000_000_000)
    c = divmod(st.st_ctime_ns, 1_000_000_000)
    return a, m, c, c


def data_ranges(fd: int, size: int) -> list[tuple[int, int]]:
    """[(start, end)] byte ranges holding data (holes skipped), via SEEK_DATA/HOLE."""
    ranges = []
    pos = 0
    try:
        while pos < size:
            start = os.lseek(fd, pos, os.SEEK_DATA)
            if start >= size:
                break
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            ranges.append((start, end))
            pos = end
    except OSError as e:
        if e.errno == errno.ENXIO:       # no data after pos
            return ranges
        return [(0, size)] if size else []
    return ranges


def write_file_data(trans, writer, inode: Inode, visible, source, inline_max: int,
                    what: str, *, replace: bool = False, size: int | None = None,
                    dense: bool = False) -> None:
    """Give `inode` the contents of `source`: a host fd (int, sparse-aware; `size`
    if the caller already knows it; `dense` if the host says the file has no
    holes) or an iterable of byte chunks. Sets size and sectors. Without `replace` the
    inode is new: its keys go in unlooked-up."""
    inum, snap = inode.inum, inode.snapshot
    keys = []
    if isinstance(source, int):
        if size is None:
            size = os.fstat(source).st_size
        if size <= inline_max:
            data = os.pread(source, size, 0) if size else b""
            size = len(data)
            keys = [inline_key(inum, snap, data)] if data else []
        else:
            block = writer.block
            for start, end in [(0, size)] if dense else data_ranges(source, size):
                a = start // block * block
                b = min(-(-end // block) * block, max(end, a))
                extents, n = writer.copy_fd(source, a, b)
                keys += data_keys(inum, snap, a // SECTOR, extents)
                if n < b - a:
                    break
    else:
        chunks = _rechunk(source, READ_CHUNK)
        first = next(chunks, b"")
        if len(first) <= inline_max:
            size = len(first)
            keys = [inline_key(inum, snap, first)] if first else []
        else:
            pos = 0
            for chunk in [first, *chunks]:
                keys += data_keys(inum, snap, pos // SECTOR, writer.write(chunk))
                pos += len(chunk)
            size = pos
    inode.size = size
    if replace:
        inode.sectors += replace_range(trans, inum, snap, 0, END_OF_FILE, keys, visible)
    else:
        for k in keys:
            trans.update_new(BtreeId.extents, k)
        inode.sectors = sum(k.size for k in keys)


def _rechunk(source, size: int):
    """Byte chunks of exactly `size` bytes (the last may be shorter) from any chunks.
    `size` is a multiple of the block size, so extents stay block-aligned."""
    buf = bytearray()
    for chunk in source:
        buf += chunk
        while len(buf) >= size:
            yield bytes(buf[:size])
            del buf[:size]
    if buf:
        yield bytes(buf)


class NewDir:
    """A directory being filled: its inode stays in memory and is written once at
    the end; for a directory this run created (`new`), the dirent slots in use
    are known here, so names are placed without looking anything up. Shared by
    the host import and by `cp -r` (remap.py)."""

    __slots__ = ("where", "inode", "new", "slots", "path")

    def __init__(self, where: Where, inode: Inode, new: bool, path: str):
        self.where = where
        self.inode = inode
        self.new = new
        self.slots: set[int] = set()
        self.path = path

    def slot(self, trans, fs: Filesystem, name: bytes) -> int:
        """The slot `name` goes in: probed through the transaction in an existing
        directory, from the slots handed out in a new one."""
        h = name_hash(name, self.inode.hash_seed)
        if not self.new:
            return hashed.find_slot(trans, BtreeId.dirents, self.where.inum, h,
                                    fs.visible(self.where.snapshot))
        slots = self.slots
        while h in slots:
            h += 1
        slots.add(h)
        return h

    def add_entry(self, trans, fs: Filesystem, name: bytes, inum: int, mode: int) -> int:
        """A dirent `name` -> inum (of file type `mode`); returns its slot."""
        where = self.where
        slot = self.slot(trans, fs, name)
        key = dirent_key((where.inum, slot, where.snapshot), Dirent(inum, dtype_of(mode), name))
        trans.update_new(BtreeId.dirents, key) if self.new else trans.update(BtreeId.dirents, key)
        return slot


def new_xattr(t, where: Where, inode: Inode, full: bytes, value: bytes, slots: set[int]) -> None:
    """An xattr of an inode created in this transaction: its slot is chosen from
    `slots` (the slots this inode's xattrs took so far), without lookups."""
    from ..formats.constants import XATTR_NAME_MAX, XATTR_VALUE_MAX

    parsed = split_name(full)
    if parsed is None:
        raise InvalidNameError(f"xattr name {full!r} has no known namespace prefix")
    x_type, xname = parsed
    if len(xname) > XATTR_NAME_MAX or len(value) > XATTR_VALUE_MAX or b"\0" in xname:
        raise InvalidNameError(f"xattr {full!r} too long or invalid")
    h = name_hash(bytes([x_type]) + xname, inode.hash_seed)
    while h in slots:
        h += 1
    slots.add(h)
    t.update_new(BtreeId.xattrs, xattr_key((where.inum, h, where.snapshot),
                                           Xattr(x_type, xname, value)))


class Populator:
    """Copies host trees into one subvolume of an open filesystem."""

    def __init__(self, fs: Filesystem, *, progress=None):
        self.fs = fs
        self.store = fs.store
        self.report = Report()
        self.links: dict[tuple[int, int], Where] = {}
        self.trans = None
        self.entries = 0
        self.batch_bytes = 0
        self.writer = DataWriter(self.store, self.store.sb.data_csum_type)
        self.progress = progress
        self.rng = random.Random(os.urandom(16))   # hash seeds: one urandom call, not one per inode
        self.str_hash = self.store.sb.str_hash_type
        self.data_csum = self.store.sb.data_csum_type
        try:     # the image itself, when it lies inside the source tree, is not copied
            st = os.fstat(self.store.dev.fd)
            self.image_key = (st.st_dev, st.st_ino)
        except (AttributeError, OSError):
            self.image_key = None

    # --------------------------------------------------------------- batching

    def _t(self):
        if self.trans is None:
            self.trans = self.store.transaction()
        return self.trans

    def _maybe_commit(self, open_dirs: list[NewDir]) -> None:
        if self.entries >= BATCH_ENTRIES or self.batch_bytes >= BATCH_BYTES:
            # directories still being filled go in as they are now, and again later
            for d in open_dirs:
                self.trans.update(BtreeId.inodes, d.inode.key(d.where.snapshot))
            self.flush()

    def flush(self) -> None:
        if self.trans is not None:
            self.writer.flush()
            self.trans.commit(journal=False if self.entries > 64 else None)
            self.trans = None
        self.entries = 0
        self.batch_bytes = 0

    # --------------------------------------------------------------- copying

    def copy_into(self, host_path: str, parent: Where, name: bytes, *,
                  follow: bool = False) -> Where | None:
        """Copy host_path (file, dir, link, ...) into directory `parent` as `name`;
        with `follow`, a symlink host_path is copied as what it points to (cp without
        -r does that to the files named on its command line)."""
        check_name(name)
        try:
            if follow:
                host_path = os.path.realpath(host_path)
            st = os.lstat(host_path)
        except OSError as e:
            self.report.problems.append(f"{host_path}: {e.strerror}")
            return None
        t = self._t()
        self.fs.check_writable(parent, t)
        dir_inode = self.fs.inode(parent, t)
        if not dir_inode.is_dir:
            raise NotADirError("destination is not a directory")
        if self.fs.lookup(parent, dir_inode, name, t) is not None:
            raise ExistsError(f"{name.decode('utf-8', 'replace')}: already exists")
        pdir = NewDir(parent, dir_inode, False, host_path)
        where = self._copy(host_path, st, pdir, name, [pdir])
        self._close_dir(pdir, None)
        self.flush()
        return where

    def copy_contents(self, host_dir: str, target: Where, *, set_root_attrs: bool) -> None:
        """Copy the entries of host_dir into the existing directory `target`."""
        t = self._t()
        self.fs.check_writable(target, t)
        dir_inode = self.fs.inode(target, t)
        try:
            st = os.stat(host_dir)
        except OSError as e:
            self.report.problems.append(f"{host_dir}: {e.strerror}")
            return
        d = NewDir(target, dir_inode, False, host_dir)
        self._fill(d, [d])
        self._close_dir(d, st if set_root_attrs else None)
        if set_root_attrs:
            self._xattrs(host_dir, d.where, d.inode, self._t(), existing=True)
        self.flush()

    def _close_dir(self, d: NewDir, st: os.stat_result | None) -> None:
        """The directory is complete: its inode goes in (with the host's times if st)."""
        if st is not None:
            self._apply_attrs(d.inode, st)
        elif not d.new:
            sec, nsec = now()
            d.inode.mtime_sec = d.inode.ctime_sec = sec
            d.inode.mtime_nsec = d.inode.ctime_nsec = nsec
        self._t().update(BtreeId.inodes, d.inode.key(d.where.snapshot))

    def _fill(self, d: NewDir, open_dirs: list[NewDir]) -> None:
        try:
            with os.scandir(d.path) as it:
                children = sorted(it, key=lambda e: e.name)
        except OSError as e:
            self.report.problems.append(f"{d.path}: cannot list: {e.strerror}")
            return
        for entry in children:
            name = os.fsencode(entry.name)
            problem = name_problem(name)
            if problem:
                self.report.problems.append(f"{entry.path}: invalid name {name!r}: {problem}")
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as e:
                self.report.problems.append(f"{entry.path}: {e.strerror}")
                continue
            if not d.new:
                t = self._t()
                if self.fs.lookup(d.where, d.inode, name, t) is not None:
                    self.report.problems.append(f"{entry.path}: already exists in the image; "
                                                "skipped")
                    continue
            self._copy(entry.path, st, d, name, open_dirs)

    def _add_entry(self, d: NewDir, name: bytes, inum: int, mode: int) -> int:
        return d.add_entry(self._t(), self.fs, name, inum, mode)

    def _copy(self, path: str, st: os.stat_result, parent: NewDir, name: bytes,
              open_dirs: list[NewDir]) -> Where | None:
        # Runs once per host file: written for few calls (a stdlib import is ~8,000
        # of these, 100k small files 100,000).
        fs = self.fs
        report = self.report
        mode = st.st_mode
        fmt = S_IFMT(mode)
        key = (st.st_dev, st.st_ino)
        if key == self.image_key:
            report.problems.append(f"{path}: is the image being written; skipped")
            return None
        nlink = st.st_nlink
        if nlink > 1 and fmt != S_IFDIR and key in self.links:
            return self._hardlink(self.links[key], parent, name, open_dirs)
        fd = None
        if fmt == S_IFREG:
            try:
                fd = os.open(path, _READ_FLAGS)
            except OSError as e:
                report.problems.append(f"{path}: cannot read: {e.strerror}")
                return None
        t = self.trans or self._t()
        pw = parent.where
        (a_s, a_ns), (m_s, m_ns), (c_s, c_ns), (b_s, b_ns) = _times(st)
        inum = fs.alloc_inum(t)
        inode = Inode(inum, mode=mode, uid=st.st_uid, gid=st.st_gid,
                      nlink=2 if fmt == S_IFDIR else 1,
                      rdev=st.st_rdev if fmt == S_IFCHR or fmt == S_IFBLK else 0,
                      atime_sec=a_s, atime_nsec=a_ns, mtime_sec=m_s, mtime_nsec=m_ns,
                      ctime_sec=c_s, ctime_nsec=c_ns, btime_sec=b_s, btime_nsec=b_ns,
                      hash_seed=self.rng.getrandbits(64), str_hash=self.str_hash,
                      data_csum=self.data_csum, snapshot=pw.snapshot)
        where = Where(pw.subvol, pw.snapshot, inum)
        try:
            inode.dir, inode.dir_offset = pw.inum, parent.add_entry(t, fs, name, inum, mode)
            if fd is not None:
                size = st.st_size
                # as many bytes allocated as the size: no holes to look for (two
                # lseeks saved per file); otherwise SEEK_DATA/SEEK_HOLE find them
                write_file_data(t, self.writer, inode, None, fd, fs.inline_max, path,
                                size=size, dense=st.st_blocks * 512 >= size)
                report.files += 1
                report.bytes += inode.size
                self.batch_bytes += inode.size
            elif fmt == S_IFLNK:
                target = os.readlink(os.fsencode(path))
                write_file_data(t, self.writer, inode, None, [target], fs.inline_max, path)
                report.symlinks += 1
            elif fmt == S_IFDIR:
                report.dirs += 1
                parent.inode.nlink += 1
            else:
                report.special += 1
            self._xattrs(path, where, inode, t, fd=fd)
        finally:
            if fd is not None:
                os.close(fd)
        if fmt == S_IFDIR:
            d = NewDir(where, inode, True, path)
            open_dirs.append(d)
            self._fill(d, open_dirs)
            open_dirs.pop()
            self._close_dir(d, st)   # the host's times, now that its children are in
        else:
            self._t().update_new(BtreeId.inodes, inode.key(pw.snapshot))
            if nlink > 1:
                self.links[key] = where
        self.entries += 1
        if self.progress is not None:
            self.progress.advance(1)
        self._maybe_commit(open_dirs)
        return where

    def _hardlink(self, target: Where, parent: NewDir, name: bytes, open_dirs) -> Where:
        fs = self.fs
        t = self._t()
        inode = fs.inode(target, t)
        self._add_entry(parent, name, inode.inum, inode.mode)
        inode.nlink += 1
        fs.put_inode(t, target, inode)
        self.report.hardlinks += 1
        self.entries += 1
        self._maybe_commit(open_dirs)
        return target

    def _apply_attrs(self, inode: Inode, st: os.stat_result) -> None:
        (inode.atime_sec, inode.atime_nsec), (inode.mtime_sec, inode.mtime_nsec), \
            (inode.ctime_sec, inode.ctime_nsec), _ = _times(st)
        inode.mode = st.st_mode
        inode.uid, inode.gid = st.st_uid, st.st_gid

    def _xattrs(self, path: str, where: Where, inode: Inode, t, *, existing: bool = False,
                fd: int | None = None) -> None:
        """The xattrs of host `path`, read through `fd` when it is open (no path walk)."""
        try:
            names = os.listxattr(path, follow_symlinks=False) if fd is None else os.listxattr(fd)
        except OSError:
            return
        slots: set[int] = set()
        for n in names:
            try:
                value = (os.getxattr(path, n, follow_symlinks=False) if fd is None
                         else os.getxattr(fd, n))
            except OSError as e:
                self.report.problems.append(f"{path}: xattr {n}: {e.strerror}")
                continue
            try:
                if existing:
                    self.fs.setxattr(where, os.fsencode(n), value, trans=t)
                else:
                    new_xattr(t, where, inode, os.fsencode(n), value, slots)
                self.report.xattrs += 1
            except ValueError as e:
                self.report.problems.append(f"{path}: xattr {n}: {e}")


def populate_from_directory(store, source: str, *, progress=None) -> dict:
    """format --source: copy the contents of `source` into the root directory.
    progress: the caller's progress bar (advance(n)), or None."""
    from ..gcpause import collector_paused

    fs = Filesystem(store)
    with collector_paused():
        # (why the collector is paused: bfs_tools/gcpause.py; an import holds
        # thousands of queued keys until each commit)
        pop = Populator(fs, progress=progress)
        pop.copy_contents(source, fs.root(), set_root_attrs=True)
    return pop.report.as_dict()
