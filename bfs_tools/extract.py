"""Safe extraction of files and trees from an image to the host (`bfs get`).

A hostile image must not write outside the destination. So:
  * every name is checked: '.', '..', empty, or containing '/' or NUL is refused
    (reported, skipped) — the image cannot name a parent or a path;
  * everything is created relative to an open directory fd, with O_EXCL and
    O_NOFOLLOW (files), mkdir + O_DIRECTORY|O_NOFOLLOW (directories): a symlink
    planted by the image is created but never followed while writing;
  * device nodes are not created, and setuid/setgid bits are dropped, unless
    asked for (--devices, --keep-setuid);
  * sparse files keep their holes (data is written only where the image has
    extents), so a file claiming 2^62 bytes costs only what it really holds;
  * directories are walked with an explicit stack and each (subvolume, inode)
    directory is entered once, so depth and cycles are bounded.

Speed (a tree is thousands of small files): the inodes, data keys and xattrs of
a directory's children are read together in inode-number order, each leaf
descended to once for all the children it holds (DirBatch); file data is read
through a mapped window of the image (DataWindow), verified there and written
to the host from it, without a read call or a copy; owner, mode and times are
set through the open file (no path lookups).
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field

from .btree.ranges import read_ranges
from .errors import DeviceError, ExistsError, FormatError, IsADirError, NotADirError
from .extents import decode_extent
from .formats.constants import U32_MAX, U64_MAX
from .formats.ids import BtreeId, KeyType
from .fs.data import SECTOR, ReadContext, check_region, key_data, verify_region, visible_extents
from .fs.dirent import name_problem
from .fs.filesystem import Entry, Filesystem, Resolved, Where, visible_inode
from .fs.inode import Inode
from .fs.xattr import decode_xattr
from .gcpause import collector_paused
from .keys import filter_visible

WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FD_WINDOW = 64      # directory levels kept open while extracting a tree
BATCH = 1024        # children of a directory whose metadata is read together
DATA_WINDOW = 32 << 20   # bytes of the image mapped at once for file data
_UNREAD = object()  # DirBatch: not read with the batch (read when needed)


@dataclass
class ExtractReport:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)
    damaged: int = 0          # how many of the skipped were skipped for damage in the image


class _Child:
    """A directory entry with what extracting it needs; each of inode, data (the
    visible data keys of a regular file) and xattrs is _UNREAD when it was not
    read with its batch (then it is looked up on its own, the slow way)."""

    __slots__ = ("entry", "inode", "data", "xattrs")

    def __init__(self, entry: Entry):
        self.entry = entry
        self.inode = self.data = self.xattrs = _UNREAD


def read_children(fs: Filesystem, entries: list[Entry]) -> list[_Child]:
    """The entries with their inodes, data keys and xattrs, read in inode-number
    order (a tree written by populate or cp numbers its inodes in that order too).
    A btree that cannot be read here (damage) leaves its part _UNREAD: the slow
    path then meets, and reports, the damage for the one file it belongs to."""
    btrees = fs.btrees
    children = [_Child(e) for e in entries]
    order = sorted(children, key=lambda c: c.entry.where.inum)
    inums = [c.entry.where.inum for c in order]
    views = [fs.visible(c.entry.where.snapshot) for c in order]
    try:
        ranges = [((0, i, 0), (0, i, U32_MAX)) for i in inums]
        inodes = read_ranges(btrees, BtreeId.inodes, ranges, _UNREAD)
        for c, visible, keys in zip(order, views, inodes, strict=True):
            if keys is not _UNREAD:
                c.inode = visible_inode(keys, c.entry.where, visible)
        ranges = [((i, 0, 0), (i, U64_MAX, U32_MAX)) for i in inums]
        xattrs = read_ranges(btrees, BtreeId.xattrs, ranges, _UNREAD)
        for c, visible, keys in zip(order, views, xattrs, strict=True):
            if keys is not _UNREAD:
                c.xattrs = [decode_xattr(k.val) for k in filter_visible(keys, visible)
                            if k.type == KeyType.xattr]
        files = [(c, visible) for c, visible in zip(order, views, strict=True)
                 if c.inode is not _UNREAD and c.inode is not None and c.inode.is_reg]
        ranges = [((c.entry.where.inum, 1, 0), (c.entry.where.inum, U64_MAX, U32_MAX))
                  for c, _ in files]
        data = read_ranges(btrees, BtreeId.extents, ranges, _UNREAD)
        for (c, visible), keys in zip(files, data, strict=True):
            if keys is not _UNREAD:
                c.data = list(filter_visible(keys, visible))
    except FormatError:
        pass
    return children


class DataWindow:
    """File data read through a read-only mapping of DATA_WINDOW bytes of the
    image: a tree written by populate or cp lies mostly in order on the device,
    so thousands of small files come from one mapping, without a read call or a
    copy each. Every region is bounds-checked and its checksum verified on the
    mapping before any of it is handed out."""

    def __init__(self, store):
        self.store = store
        self.view = memoryview(b"")
        self.lo = self.hi = 0          # device bytes mapped in view

    def region(self, ctx: ReadContext, e, file_offset: int):
        check_region(ctx, e, file_offset)
        start = e.sector * SECTOR
        end = start + e.region_sectors * SECTOR
        if not (self.lo <= start and end <= self.hi):
            dev = self.store.dev
            lo = start - start % DATA_WINDOW
            hi = min(max(lo + DATA_WINDOW, end), dev.size)
            view = dev.map(lo, hi - lo)
            if view is None:            # not mappable: read just this region
                data = dev.read(start, end - start)
                verify_region(ctx, e, data, file_offset)
                return data
            self.view, self.lo, self.hi = view, lo, hi
        data = self.view[start - self.lo:end - self.lo]
        verify_region(ctx, e, data, file_offset)
        return data


class Extractor:
    def __init__(self, fs: Filesystem, *, devices: bool = False, keep_setuid: bool = False,
                 owners: bool | None = None, overwrite: bool = False):
        self.fs = fs
        self.devices = devices
        self.keep_setuid = keep_setuid
        self.owners = os.geteuid() == 0 if owners is None else owners
        self.overwrite = overwrite
        self.report = ExtractReport()
        # hard links: (subvol, inum) -> (host dir, name of the first link); one fd per host
        # directory holding a first link, not one per file
        self.links: dict[tuple[int, int], tuple[tuple[int, int], bytes]] = {}
        self._dir_fds: dict[tuple[int, int], int] = {}
        self.root = os.geteuid() == 0      # xattrs other than user.* are restored as root only
        self.window = DataWindow(fs.store)

    # ------------------------------------------------------------------ entry points

    def get(self, src: Resolved, dest: str, *, recursive: bool) -> ExtractReport:
        """cp semantics: into an existing directory under the source's name, else as dest."""
        with collector_paused():    # (why: bfs_tools/gcpause.py; a tree is many small objects)
            return self._get(src, dest, recursive=recursive)

    def _get(self, src: Resolved, dest: str, *, recursive: bool) -> ExtractReport:
        name = src.name.decode("utf-8", "surrogateescape") if src.name else None
        if dest.endswith("/") and dest.strip("/"):
            if not src.inode.is_dir and not os.path.isdir(dest):
                raise NotADirError(f"{dest}: not a directory")
            dest = dest.rstrip("/")
        if os.path.isdir(dest) and not os.path.islink(dest):
            parent_dir, out_name = dest, name
            if out_name is None:            # get / into an existing dir: its contents
                if not recursive:
                    raise IsADirError("/: is a directory (use -r)")
                fd = self._open_host_dir(dest)
                try:
                    self._tree(src.where, src.inode, fd, "/")
                finally:
                    os.close(fd)
                return self.report
        else:
            parent_dir, out_name = os.path.dirname(os.path.abspath(dest)), os.path.basename(dest)
        if src.inode.is_dir and not recursive:
            raise IsADirError(f"{src.path}: is a directory (use -r)")
        fd = self._open_host_dir(parent_dir)
        try:
            out = os.fsencode(out_name)
            if src.inode.is_dir:
                try:
                    os.mkdir(out, 0o700, dir_fd=fd)
                    sub = os.open(out, DIR_FLAGS, dir_fd=fd)
                except FileExistsError:
                    raise ExistsError(f"{dest}: already exists") from None
                except OSError as e:
                    raise DeviceError(f"{dest}: {e.strerror}") from None
                try:
                    self._xattrs(src.where, sub, src.path)
                    self._tree(src.where, src.inode, sub, src.path)
                finally:
                    os.close(sub)
                self._finish(src.inode, out, fd)
                self.report.dirs += 1
            else:
                if self.overwrite:
                    try:
                        st = os.stat(out, dir_fd=fd, follow_symlinks=False)
                        if stat.S_ISREG(st.st_mode):
                            os.unlink(out, dir_fd=fd)
                    except FileNotFoundError:
                        pass
                self._one(src.where, src.inode, fd, out, src.path)
        finally:
            os.close(fd)
        return self.report

    def _open_host_dir(self, path: str) -> int:
        try:
            return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise DeviceError(f"{path}: {e.strerror}") from None

    # ------------------------------------------------------------------ trees

    def _tree(self, where: Where, inode: Inode, root_fd: int, path: str) -> None:
        """Extract the contents of directory `where` into the open directory root_fd.

        Iterative (a stack of directory frames, no recursion limit). Host fds stay
        bounded however deep the tree: only the FD_WINDOW deepest frames keep their
        directory open; a shallower one is reopened through ".." of its child (a
        directory this extraction created, checked by device and inode number)."""
        fs = self.fs
        seen = {(where.subvol, where.inum)}
        # frames: [dir where, host fd or None, image path, entries iterator, name in its
        # parent, inode (owner, mode, times are set when it is done), host (dev, ino)]
        top = os.dup(root_fd)
        st = os.fstat(top)
        stack = [[where, top, path, self._children(fs.readdir(where)), None, None,
                  (st.st_dev, st.st_ino)]]
        try:
            while stack:
                frame = stack[-1]
                dfd, dpath = frame[1], frame[2]
                kid = next(frame[3], None)
                if kid is None:
                    stack.pop()
                    try:
                        if frame[4] is not None:
                            self._finish(frame[5], frame[4], self._parent_fd(stack, frame))
                    except OSError as e:
                        self.report.skipped.append(f"{dpath}: {e.strerror}")
                        if stack[-1][1] is None:
                            return      # the parent cannot be reopened: stop here
                    finally:
                        os.close(dfd)
                    continue
                entry = kid.entry
                name = entry.name
                shown = _show(dpath, name)
                problem = name_problem(name)
                if problem:
                    self.report.skipped.append(f"{shown}: unsafe name ({problem}); skipped")
                    continue
                child = kid.inode if kid.inode is not _UNREAD else fs.get_inode(entry.where)
                if child is None:
                    self.report.skipped.append(f"{shown}: missing inode; skipped")
                    continue
                if child.is_dir:
                    if (entry.where.subvol, entry.where.inum) in seen:
                        self.report.skipped.append(f"{shown}: directory loop; skipped")
                        continue
                    seen.add((entry.where.subvol, entry.where.inum))
                    try:
                        os.mkdir(name, 0o700, dir_fd=dfd)
                        sub = os.open(name, DIR_FLAGS, dir_fd=dfd)
                    except OSError as e:
                        self.report.skipped.append(f"{shown}: {e.strerror}; skipped")
                        continue
                    st = os.fstat(sub)
                    self.report.dirs += 1
                    self._xattrs(entry.where, sub, shown, kid.xattrs)
                    try:
                        children = self._children(fs.readdir(entry.where))
                    except FormatError as e:
                        self._damaged(shown, e)
                        children = iter(())
                    stack.append([entry.where, sub, shown, children, name, child,
                                  (st.st_dev, st.st_ino)])
                    if len(stack) > FD_WINDOW + 1:
                        old = stack[-1 - FD_WINDOW]
                        if old[1] is not None:
                            os.close(old[1])
                            old[1] = None
                else:
                    self._one(entry.where, child, dfd, name, shown, kid)
        finally:
            for frame in stack:
                if frame[1] is not None:
                    os.close(frame[1])

    def _children(self, entries: list[Entry]):
        """_Child of each entry, in name order; metadata read BATCH children at a time."""
        entries.sort(key=lambda e: e.name)
        for i in range(0, len(entries), BATCH):
            yield from read_children(self.fs, entries[i:i + BATCH])

    @staticmethod
    def _parent_fd(stack: list, child: list) -> int:
        """The fd of stack[-1], the parent of the frame `child` just popped (whose
        fd is still open), reopening it through ".." when it was closed."""
        parent = stack[-1]
        if parent[1] is None:
            fd = os.open(b"..", DIR_FLAGS, dir_fd=child[1])
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != parent[6]:
                os.close(fd)
                raise OSError(errno.ESTALE, f"{parent[2]}: directory moved during extraction")
            parent[1] = fd
        return parent[1]

    # ------------------------------------------------------------------ one object

    def _one(self, where: Where, inode: Inode, dfd: int, name: bytes, shown: str,
             kid: _Child | None = None) -> None:
        mode = inode.mode
        try:
            if stat.S_ISREG(mode):
                key = (where.subvol, where.inum)
                if inode.nlink > 1 and key in self.links:
                    src_dir, src_name = self.links[key]
                    os.link(src_name, name, src_dir_fd=self._dir_fds[src_dir], dst_dir_fd=dfd,
                            follow_symlinks=False)
                    return
                if kid is None:
                    self._file(where, inode, dfd, name, shown)
                else:
                    self._file(where, inode, dfd, name, shown, kid.data, kid.xattrs)
                if inode.nlink > 1:
                    st = os.fstat(dfd)
                    host_dir = (st.st_dev, st.st_ino)
                    if host_dir not in self._dir_fds:
                        self._dir_fds[host_dir] = os.dup(dfd)
                    self.links[key] = (host_dir, name)
                return      # owner, mode and times were set through the open file
            elif stat.S_ISLNK(mode):
                target = self.fs.read_all(where, inode, shown)
                if not target or b"\0" in target:
                    self.report.skipped.append(f"{shown}: symlink target {target!r} cannot "
                                               "exist on a host; skipped")
                    return
                os.symlink(target, name, dir_fd=dfd)
                self.report.symlinks += 1
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                if not self.devices:
                    self.report.skipped.append(f"{shown}: device node not created "
                                               "(use --devices)")
                    return
                os.mknod(name, stat.S_IFMT(mode) | self._mode(mode), inode.rdev, dir_fd=dfd)
            elif stat.S_ISFIFO(mode):
                os.mkfifo(name, self._mode(mode) & 0o7777, dir_fd=dfd)
            elif stat.S_ISSOCK(mode):
                # an inode only (as cp -a, mke2fs -d): nothing listens on it
                os.mknod(name, stat.S_IFSOCK | self._mode(mode), dir_fd=dfd)
            self._finish(inode, name, dfd)
        except FileExistsError:
            self.report.skipped.append(f"{shown}: already exists on the host; skipped")
        except OSError as e:
            self.report.skipped.append(f"{shown}: {e.strerror}; skipped")
        except FormatError as e:
            self._damaged(shown, e)

    def _damaged(self, shown: str, e: Exception) -> None:
        msg = str(e)
        self.report.skipped.append(msg if msg.startswith(shown) else f"{shown}: {msg}")
        self.report.damaged += 1

    def _file(self, where: Where, inode: Inode, dfd: int, name: bytes, shown: str,
              data_keys=_UNREAD, xattrs=_UNREAD) -> None:
        """Data only where the image has some: holes (and the zero tail a key may claim
        beyond its inline bytes) stay holes, so a file claiming 2^62 bytes costs what it
        holds. A file that cannot be extracted whole is removed. data_keys, xattrs:
        what read_children found, if it did."""
        fd = os.open(name, WRITE_FLAGS, 0o600, dir_fd=dfd)
        done = False
        try:
            ctx = ReadContext(self.fs.store, shown)
            size = inode.size
            if size >= 1 << 63:
                raise OSError(errno.EFBIG, f"file size {size} not possible on the host")
            if data_keys is _UNREAD:
                data_keys = visible_extents(self.fs.btrees, where.inum,
                                            self.fs.visible(where.snapshot), 0, -(-size // SECTOR))
            end = 0         # the file's size so far (it was created empty)
            for k in data_keys:
                start = k.start * SECTOR
                if start >= size:
                    break
                limit = min(k.end * SECTOR, size) - start
                if k.type == KeyType.extent:
                    e = decode_extent(k.val)
                    off = e.offset * SECTOR
                    data = self.window.region(ctx, e, start)[off:off + limit]
                elif k.type == KeyType.inline_data:
                    data = k.val[:limit]
                else:
                    data = key_data(ctx, k, limit)
                view = memoryview(data)
                while view:
                    n = os.pwrite(fd, view, start)
                    view, start = view[n:], start + n
                end = max(end, start)
            self._xattrs(where, fd, shown, xattrs)
            if end != size:     # a hole at the end, or data keys claiming less than the size
                try:
                    os.ftruncate(fd, size)
                except OSError as e:
                    if e.errno in (errno.EFBIG, errno.EINVAL):
                        raise OSError(e.errno, f"file size {size} not possible on the host") \
                            from None
                    raise
            self.report.files += 1
            self.report.bytes += size
            done = True
            self._finish(inode, fd)
        finally:
            os.close(fd)
            if not done:
                try:
                    os.unlink(name, dir_fd=dfd)
                except OSError:
                    pass

    def _xattrs(self, where: Where, fd: int, shown: str, xattrs=_UNREAD) -> None:
        """Copy xattrs (`xattrs` if read_children read them) onto the open file
        (user.* always; others only as root)."""
        if xattrs is _UNREAD:
            try:
                xattrs = self.fs.listxattr(where)
            except FormatError as e:
                self._damaged(shown, e)
                return
        for x in xattrs:
            full = x.full_name
            if not full.startswith(b"user.") and not self.root:
                continue
            if b"\0" in full or not x.name:
                self.report.skipped.append(f"{shown}: xattr {full!r}: invalid name; skipped")
                continue
            try:
                os.setxattr(fd, full, x.value)
            except OSError:
                pass   # the host filesystem may not support it

    def _mode(self, mode: int) -> int:
        m = stat.S_IMODE(mode)
        if not self.keep_setuid:
            m &= ~(stat.S_ISUID | stat.S_ISGID)
        return m

    def _finish(self, inode: Inode, target, dfd: int | None = None) -> None:
        """Owner, permissions and times of `target`: an open fd (no path lookup),
        or a name in directory `dfd`, never following a symlink."""
        at = {} if dfd is None else {"dir_fd": dfd, "follow_symlinks": False}
        if self.owners:
            try:
                os.chown(target, inode.uid, inode.gid, **at)
            except OSError:
                pass
        if not stat.S_ISLNK(inode.mode):
            os.chmod(target, self._mode(inode.mode), **({} if dfd is None else {"dir_fd": dfd}))
        try:
            os.utime(target, ns=(inode.atime_sec * 1_000_000_000 + inode.atime_nsec,
                                 inode.mtime_sec * 1_000_000_000 + inode.mtime_nsec), **at)
        except OSError:
            pass

    def close(self) -> None:
        for fd in self._dir_fds.values():
            os.close(fd)
        self._dir_fds = {}


def _show(dpath: str, name: bytes) -> str:
    return (dpath.rstrip("/") + "/" + name.decode("utf-8", "backslashreplace"))
