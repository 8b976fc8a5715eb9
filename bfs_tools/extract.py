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

from .errors import DeviceError, ExistsError, IsADirError
from .fs.data import SECTOR, ReadContext, key_data, visible_extents
from .fs.dirent import name_problem
from .fs.filesystem import Filesystem, Resolved, Where
from .fs.inode import Inode

WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class ExtractReport:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)


class Extractor:
    def __init__(self, fs: Filesystem, *, devices: bool = False, keep_setuid: bool = False,
                 owners: bool | None = None, overwrite: bool = False):
        self.fs = fs
        self.devices = devices
        self.keep_setuid = keep_setuid
        self.owners = os.geteuid() == 0 if owners is None else owners
        self.overwrite = overwrite
        self.report = ExtractReport()
        self.links: dict[tuple[int, int], tuple[int, str]] = {}   # (subvol, inum) -> (dirfd, name)
        self._dir_fds: list[int] = []

    # ------------------------------------------------------------------ entry points

    def get(self, src: Resolved, dest: str, *, recursive: bool) -> ExtractReport:
        """cp semantics: into an existing directory under the source's name, else as dest."""
        name = src.name.decode("utf-8", "surrogateescape") if src.name else None
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
                except FileExistsError:
                    raise ExistsError(f"{dest}: already exists") from None
                sub = os.open(out, DIR_FLAGS, dir_fd=fd)
                try:
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
        """Extract the contents of directory `where` into the open directory root_fd."""
        fs = self.fs
        seen = {(where.subvol, where.inum)}
        # stack of (dir where, its host fd, its image path, entries iterator)
        stack = [(where, os.dup(root_fd), path, iter(sorted(fs.readdir(where),
                                                             key=lambda e: e.name)))]
        pending_attrs: list[tuple[int, bytes, Inode]] = []
        try:
            while stack:
                dwhere, dfd, dpath, it = stack[-1]
                entry = next(it, None)
                if entry is None:
                    stack.pop()
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
                    self.report.dirs += 1
                    self._xattrs(entry.where, sub)
                    pending_attrs.append((os.dup(dfd), name, child))
                    stack.append((entry.where, sub, shown,
                                  iter(sorted(fs.readdir(entry.where), key=lambda e: e.name))))
                else:
                    self._one(entry.where, child, dfd, name, shown)
        finally:
            for _w, fd, _p, _i in stack:
                os.close(fd)
        for dfd, name, ino in reversed(pending_attrs):
            try:
                self._finish(dfd, name, ino)
            finally:
                os.close(dfd)

    # ------------------------------------------------------------------ one object

    def _one(self, where: Where, inode: Inode, dfd: int, name: bytes, shown: str) -> None:
        mode = inode.mode
        try:
            if stat.S_ISREG(mode):
                key = (where.subvol, where.inum)
                if inode.nlink > 1 and key in self.links:
                    src_fd, src_name = self.links[key]
                    os.link(src_name, name, src_dir_fd=src_fd, dst_dir_fd=dfd,
                            follow_symlinks=False)
                    return
                self._file(where, inode, dfd, name, shown)
                if inode.nlink > 1:
                    self.links[key] = (os.dup(dfd), name)
                    self._dir_fds.append(self.links[key][0])
            elif stat.S_ISLNK(mode):
                target = self.fs.read_all(where, inode, shown)
                os.symlink(target, name, dir_fd=dfd)
                self.report.symlinks += 1
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                if not self.devices:
                    self.report.skipped.append(f"{shown}: device node not created "
                                               "(use --devices)")
                    return
                os.mknod(name, self._mode(mode), inode.rdev, dir_fd=dfd)
            elif stat.S_ISFIFO(mode):
                os.mkfifo(name, self._mode(mode) & 0o7777, dir_fd=dfd)
            elif stat.S_ISSOCK(mode):
                self.report.skipped.append(f"{shown}: socket not created")
                return
            self._finish(dfd, name, inode)
        except FileExistsError:
            self.report.skipped.append(f"{shown}: already exists on the host; skipped")
        except OSError as e:
            self.report.skipped.append(f"{shown}: {e.strerror}; skipped")

    def _file(self, where: Where, inode: Inode, dfd: int, name: bytes, shown: str) -> None:
        fd = os.open(name, WRITE_FLAGS, 0o600, dir_fd=dfd)
        try:
            ctx = ReadContext(self.fs.store, shown)
            size = inode.size
            visible = self.fs.visible(where.snapshot)
            for k in visible_extents(self.fs.btrees, where.inum, visible, 0, -(-size // SECTOR)):
                start = k.start * SECTOR
                if start >= size:
                    break
                data = key_data(ctx, k)[:size - start]
                view = memoryview(data)
                while view:
                    n = os.pwrite(fd, view, start)
                    view, start = view[n:], start + n
            self._xattrs(where, fd)
            try:
                os.ftruncate(fd, size)
            except OSError as e:
                if e.errno in (errno.EFBIG, errno.EINVAL):
                    raise OSError(e.errno, f"file size {size} not possible on the host") from None
                raise
            self.report.files += 1
            self.report.bytes += size
        finally:
            os.close(fd)

    def _xattrs(self, where: Where, fd: int) -> None:
        """Copy xattrs onto the open file (user.* always; others only as root)."""
        for x in self.fs.listxattr(where):
            full = x.full_name
            if not full.startswith(b"user.") and os.geteuid() != 0:
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
        for fd in self._dir_fds:
            os.close(fd)
        self._dir_fds = []


def _show(dpath: str, name: bytes) -> str:
    return (dpath.rstrip("/") + "/" + name.decode("utf-8", "backslashreplace"))
