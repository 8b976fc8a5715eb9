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
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field

from .errors import DeviceError, ExistsError, FormatError, IsADirError, NotADirError
from .formats.ids import KeyType
from .fs.data import SECTOR, ReadContext, key_data, visible_extents
from .fs.dirent import name_problem
from .fs.filesystem import Filesystem, Resolved, Where
from .fs.inode import Inode

WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FD_WINDOW = 64      # directory levels kept open while extracting a tree


@dataclass
class ExtractReport:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)
    damaged: int = 0          # how many of the skipped were skipped for damage in the image


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

    # ------------------------------------------------------------------ entry points

    def get(self, src: Resolved, dest: str, *, recursive: bool) -> ExtractReport:
        """cp semantics: into an existing directory under the source's name, else as dest."""
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
                self._finish(fd, out, src.inode)
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
        stack = [[where, top, path, iter(sorted(fs.readdir(where), key=lambda e: e.name)),
                  None, None, (st.st_dev, st.st_ino)]]
        try:
            while stack:
                frame = stack[-1]
                dfd, dpath = frame[1], frame[2]
                entry = next(frame[3], None)
                if entry is None:
                    stack.pop()
                    try:
                        if frame[4] is not None:
                            self._finish(self._parent_fd(stack, frame), frame[4], frame[5])
                    except OSError as e:
                        self.report.skipped.append(f"{dpath}: {e.strerror}")
                        if stack[-1][1] is None:
                            return      # the parent cannot be reopened: stop here
                    finally:
                        os.close(dfd)
                    continue
                name = entry.name
                shown = _show(dpath, name)
                problem = name_problem(name)
                if problem:
                    self.report.skipped.append(f"{shown}: unsafe name ({problem}); skipped")
                    continue
                child = fs.get_inode(entry.where)
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
                    self._xattrs(entry.where, sub, shown)
                    try:
                        children = sorted(fs.readdir(entry.where), key=lambda e: e.name)
                    except FormatError as e:
                        self._damaged(shown, e)
                        children = []
                    stack.append([entry.where, sub, shown, iter(children), name, child,
                                  (st.st_dev, st.st_ino)])
                    if len(stack) > FD_WINDOW + 1:
                        old = stack[-1 - FD_WINDOW]
                        if old[1] is not None:
                            os.close(old[1])
                            old[1] = None
                else:
                    self._one(entry.where, child, dfd, name, shown)
        finally:
            for frame in stack:
                if frame[1] is not None:
                    os.close(frame[1])

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

    def _one(self, where: Where, inode: Inode, dfd: int, name: bytes, shown: str) -> None:
        mode = inode.mode
        try:
            if stat.S_ISREG(mode):
                key = (where.subvol, where.inum)
                if inode.nlink > 1 and key in self.links:
                    src_dir, src_name = self.links[key]
                    os.link(src_name, name, src_dir_fd=self._dir_fds[src_dir], dst_dir_fd=dfd,
                            follow_symlinks=False)
                    return
                self._file(where, inode, dfd, name, shown)
                if inode.nlink > 1:
                    st = os.fstat(dfd)
                    host_dir = (st.st_dev, st.st_ino)
                    if host_dir not in self._dir_fds:
                        self._dir_fds[host_dir] = os.dup(dfd)
                    self.links[key] = (host_dir, name)
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
            self._finish(dfd, name, inode)
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

    def _file(self, where: Where, inode: Inode, dfd: int, name: bytes, shown: str) -> None:
        """Data only where the image has some: holes (and the zero tail a key may claim
        beyond its inline bytes) stay holes, so a file claiming 2^62 bytes costs what it
        holds. A file that cannot be extracted whole is removed."""
        fd = os.open(name, WRITE_FLAGS, 0o600, dir_fd=dfd)
        done = False
        try:
            ctx = ReadContext(self.fs.store, shown)
            size = inode.size
            if size >= 1 << 63:
                raise OSError(errno.EFBIG, f"file size {size} not possible on the host")
            visible = self.fs.visible(where.snapshot)
            for k in visible_extents(self.fs.btrees, where.inum, visible, 0, -(-size // SECTOR)):
                start = k.start * SECTOR
                if start >= size:
                    break
                limit = min(k.end * SECTOR, size) - start
                if k.type == KeyType.inline_data:
                    data = k.val[:limit]
                else:
                    data = key_data(ctx, k, limit)
                view = memoryview(data)
                while view:
                    n = os.pwrite(fd, view, start)
                    view, start = view[n:], start + n
            self._xattrs(where, fd, shown)
            try:
                os.ftruncate(fd, size)
            except OSError as e:
                if e.errno in (errno.EFBIG, errno.EINVAL):
                    raise OSError(e.errno, f"file size {size} not possible on the host") from None
                raise
            self.report.files += 1
            self.report.bytes += size
            done = True
        finally:
            os.close(fd)
            if not done:
                try:
                    os.unlink(name, dir_fd=dfd)
                except OSError:
                    pass

    def _xattrs(self, where: Where, fd: int, shown: str) -> None:
        """Copy xattrs onto the open file (user.* always; others only as root)."""
        try:
            xattrs = self.fs.listxattr(where)
        except FormatError as e:
            self._damaged(shown, e)
            return
        for x in xattrs:
            full = x.full_name
            if not full.startswith(b"user.") and os.geteuid() != 0:
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

    def _finish(self, dfd: int, name: bytes, inode: Inode) -> None:
        """Owner, permissions and times (never following a symlink)."""
        is_link = stat.S_ISLNK(inode.mode)
        if self.owners:
            try:
                os.chown(name, inode.uid, inode.gid, dir_fd=dfd, follow_symlinks=False)
            except OSError:
                pass
        if not is_link:
            os.chmod(name, self._mode(inode.mode), dir_fd=dfd)
        try:
            os.utime(name, ns=(inode.atime_sec * 1_000_000_000 + inode.atime_nsec,
                               inode.mtime_sec * 1_000_000_000 + inode.mtime_nsec),
                     dir_fd=dfd, follow_symlinks=False)
        except OSError:
            pass

    def close(self) -> None:
        for fd in self._dir_fds.values():
            os.close(fd)
        self._dir_fds = {}


def _show(dpath: str, name: bytes) -> str:
    return (dpath.rstrip("/") + "/" + name.decode("utf-8", "backslashreplace"))
