"""Copying a host directory tree into the filesystem (format --source, put -r).

Preserves modes, owners, times (ns), symlinks, hard links (one inode, keyed by
the host's (st_dev, st_ino), so links across host filesystems stay separate
files), device nodes/fifos/sockets, sparse holes (SEEK_DATA/SEEK_HOLE) and
xattrs where the host lets us read them. Unreadable files are reported and
skipped; everything else is still copied.

Speed: file data is written sequentially into freshly allocated buckets with
one pwrite per run of contiguous data (DataWriter), no per-file fsync, and the
metadata goes in large transactions (unjournalled when large: the btree nodes
are written before the commit point instead).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field

from ..errors import ExistsError, NotADirError
from ..formats.ids import BtreeId
from .data import END_OF_FILE, SECTOR, DataWriter, data_keys, inline_key, replace_range
from .filesystem import Filesystem, Where, check_name, dtype_of
from .inode import Inode

BATCH_ENTRIES = 4000
BATCH_BYTES = 256 << 20
READ_CHUNK = 4 << 20


@dataclass
class Report:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    special: int = 0
    hardlinks: int = 0
    bytes: int = 0
    xattrs: int = 0
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"files": self.files, "dirs": self.dirs, "symlinks": self.symlinks,
                "special": self.special, "hardlinks": self.hardlinks, "bytes": self.bytes,
                "xattrs": self.xattrs, "problems": list(self.problems)}


def _times(st: os.stat_result):
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


def write_file_data(trans, writer: DataWriter, inode: Inode, visible, source, inline_max: int,
                    what: str, *, replace: bool = False) -> None:
    """Give `inode` the contents of `source`: a host fd (int, sparse-aware) or an
    iterable of byte chunks. Sets size and sectors."""
    inum, snap = inode.inum, inode.snapshot
    keys = []
    size = 0
    if isinstance(source, int):
        size = os.fstat(source).st_size
        ranges = data_ranges(source, size)
        if size <= inline_max:
            data = os.pread(source, size, 0) if size else b""
            size = len(data)
            keys = [inline_key(inum, snap, data)] if data else []
        else:
            block = writer.block
            for start, end in ranges:
                a = start // block * block
                b = min(-(-end // block) * block, max(end, a))
                pos = a
                while pos < b:
                    n = min(READ_CHUNK, b - pos)
                    chunk = os.pread(source, n, pos)
                    if not chunk:
                        break
                    keys += data_keys(inum, snap, pos // SECTOR, writer.write(chunk))
                    pos += len(chunk)
                    if len(chunk) < n:
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
            trans.update(BtreeId.extents, k)
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

    def _maybe_commit(self) -> None:
        if self.entries >= BATCH_ENTRIES or self.batch_bytes >= BATCH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.trans is not None:
            self.writer.flush()
            self.trans.commit()
            self.trans = None
        self.entries = 0
        self.batch_bytes = 0

    # --------------------------------------------------------------- copying

    def copy_into(self, host_path: str, parent: Where, name: bytes) -> Where | None:
        """Copy host_path (file, dir, link, ...) into directory `parent` as `name`."""
        check_name(name)
        try:
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
        where = self._copy(host_path, st, parent, name, dir_inode)
        self.fs._touch_dir(self._t(), parent, self.fs.inode(parent, self._t()))
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
        self._copy_children(host_dir, target, dir_inode, check_existing=True)
        if set_root_attrs:
            t = self._t()
            root = self.fs.inode(target, t)
            self._apply_attrs(root, st)
            self.fs.put_inode(t, target, root)
            self._xattrs(host_dir, target, t)
        self.flush()

    def _copy_children(self, host_dir: str, dir_where: Where, dir_inode: Inode,
                       check_existing: bool) -> None:
        try:
            with os.scandir(host_dir) as it:
                children = sorted(it, key=lambda e: e.name)
        except OSError as e:
            self.report.problems.append(f"{host_dir}: cannot list: {e.strerror}")
            return
        for entry in children:
            name = os.fsencode(entry.name)
            try:
                check_name(name)
            except ValueError as e:
                self.report.problems.append(f"{entry.path}: {e}")
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as e:
                self.report.problems.append(f"{entry.path}: {e.strerror}")
                continue
            if check_existing:
                t = self._t()
                existing = self.fs.lookup(dir_where, self.fs.inode(dir_where, t), name, t)
                if existing is not None:
                    self.report.problems.append(f"{entry.path}: already exists in the image; "
                                                "skipped")
                    continue
            self._copy(entry.path, st, dir_where, name, None)

    def _copy(self, path: str, st: os.stat_result, parent: Where, name: bytes,
              dir_inode: Inode | None) -> Where | None:
        fs = self.fs
        mode = st.st_mode
        key = (st.st_dev, st.st_ino)
        if key == self.image_key:
            self.report.problems.append(f"{path}: is the image being written; skipped")
            return None
        if not stat.S_ISDIR(mode) and st.st_nlink > 1 and key in self.links:
            return self._hardlink(self.links[key], parent, name)
        fd = None
        if stat.S_ISREG(mode):
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError as e:
                self.report.problems.append(f"{path}: cannot read: {e.strerror}")
                return None
        try:
            t = self._t()
            inode = fs.new_inode(t, parent, mode, uid=st.st_uid, gid=st.st_gid,
                                 rdev=st.st_rdev if (stat.S_ISCHR(mode) or stat.S_ISBLK(mode)) else 0,
                                 times=_times(st))
            inode.nlink = 2 if stat.S_ISDIR(mode) else 1
            where = Where(parent.subvol, parent.snapshot, inode.inum)
            pdir = fs.inode(parent, t)
            slot = fs._add_dirent(t, parent, pdir, name, inode.inum, dtype_of(mode))
            inode.dir, inode.dir_offset = parent.inum, slot
            visible = fs.visible(parent.snapshot)
            if fd is not None:
                write_file_data(t, self.writer, inode, visible, fd, fs.inline_max, path)
                self.report.files += 1
                self.report.bytes += inode.size
                self.batch_bytes += inode.size
            elif stat.S_ISLNK(mode):
                target = os.readlink(os.fsencode(path))
                write_file_data(t, self.writer, inode, visible, [target], fs.inline_max, path)
                self.report.symlinks += 1
            elif stat.S_ISDIR(mode):
                self.report.dirs += 1
                pdir.nlink += 1
            else:
                self.report.special += 1
            fs.put_inode(t, where, inode)
            fs.put_inode(t, parent, pdir)
            self._xattrs(path, where, t)
            if not stat.S_ISDIR(mode) and st.st_nlink > 1:
                self.links[key] = where
        finally:
            if fd is not None:
                os.close(fd)
        self.entries += 1
        if self.progress is not None:
            self.progress.advance(1)
        self._maybe_commit()
        if stat.S_ISDIR(mode):
            self._copy_children(path, where, inode, check_existing=False)
            # a directory's times are the host's, after its children went in
            t = self._t()
            d = fs.inode(where, t)
            self._apply_attrs(d, st)
            fs.put_inode(t, where, d)
        return where

    def _hardlink(self, target: Where, parent: Where, name: bytes) -> Where:
        fs = self.fs
        t = self._t()
        inode = fs.inode(target, t)
        pdir = fs.inode(parent, t)
        fs._add_dirent(t, parent, pdir, name, inode.inum, dtype_of(inode.mode))
        inode.nlink += 1
        fs.put_inode(t, target, inode)
        self.report.hardlinks += 1
        self.entries += 1
        self._maybe_commit()
        return target

    def _apply_attrs(self, inode: Inode, st: os.stat_result) -> None:
        (inode.atime_sec, inode.atime_nsec), (inode.mtime_sec, inode.mtime_nsec), \
            (inode.ctime_sec, inode.ctime_nsec), _ = _times(st)
        inode.mode = st.st_mode
        inode.uid, inode.gid = st.st_uid, st.st_gid

    def _xattrs(self, path: str, where: Where, t) -> None:
        try:
            names = os.listxattr(path, follow_symlinks=False)
        except OSError:
            return
        for n in names:
            try:
                value = os.getxattr(path, n, follow_symlinks=False)
            except OSError as e:
                self.report.problems.append(f"{path}: xattr {n}: {e.strerror}")
                continue
            try:
                self.fs.setxattr(where, os.fsencode(n), value, trans=t)
                self.report.xattrs += 1
            except ValueError as e:
                self.report.problems.append(f"{path}: xattr {n}: {e}")


def populate_from_directory(store, source: str, *, progress=None) -> dict:
    """format --source: copy the contents of `source` into the root directory."""
    from ..cli.output import Progress

    fs = Filesystem(store)
    total = None
    with Progress("copying", total=total, enabled=progress) as bar:
        pop = Populator(fs, progress=bar)
        pop.copy_contents(source, fs.root(), set_root_attrs=True)
    return pop.report.as_dict()
