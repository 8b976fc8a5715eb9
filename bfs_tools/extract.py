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
set through the open file (no path lookups); small files are created and
written on a few threads (_Writers), overlapping the host kernel's file
creation, the larger part of the time on an ext4 host.
"""

from __future__ import annotations

import errno
import os
import stat
from collections import deque
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from operator import itemgetter

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
# small files written on threads (_Writers): how many threads, files per batch, batches
# in flight at most (bounds the data held), largest file written so, directories whose
# fd stays open until their files are written
WRITER_THREADS = 2
BATCH_FILES = 32
INFLIGHT_FILES = 2048
INFLIGHT_BYTES = 64 << 20
SMALL_FILE = 256 << 10
CLOSING = 32


@dataclass
class ExtractReport:
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)
    damaged: int = 0          # how many of the skipped were skipped for damage in the image


@dataclass
class _Tally:
    """What a batch of writes did, merged into the report by the main thread."""
    files: int = 0
    bytes: int = 0
    notes: list = field(default_factory=list)     # (sequence number, warning)


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
    by_snapshot = {}        # the children of a directory share (mostly) one snapshot
    views = [by_snapshot.get(s) or by_snapshot.setdefault(s, fs.visible(s))
             for s in (c.entry.where.snapshot for c in order)]
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
                            if k.type == KeyType.xattr] if keys else []
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


class _Frame:
    """A directory of the tree being extracted. `fd` is its host directory (None
    while closed to bound fds, see _tree); `batch` holds its small files not yet
    handed to the writers, `pending` the batches handed over and not yet merged."""

    __slots__ = ("where", "fd", "path", "children", "name", "inode", "host_id",
                 "last_name", "batch", "pending", "writer")

    def __init__(self, where: Where, fd: int, path: str, children, name: bytes | None,
                 inode: Inode | None):
        self.where, self.fd, self.path, self.children = where, fd, path, children
        self.name, self.inode = name, inode     # name in its parent; None for the top
        st = os.fstat(fd)
        self.host_id = (st.st_dev, st.st_ino)
        self.last_name = None
        self.batch: list = []
        self.pending: list = []
        self.writer: int | None = None     # the _Writers thread its files go to


class _Writers:
    """Small regular files written to the host by a few threads while the main
    thread walks the image.

    Why: extracting a tree into an ext4 host is mostly kernel time creating
    inodes (~300 us a file when the host has just deleted a tree: ext4 scans past
    every recently freed inode of the group), time the main thread would spend
    waiting, file after file. os.open/pwrite/fchown/utime/close release the GIL,
    so creations on threads overlap each other and the main thread's reading.
    Creations in one directory do not overlap (the kernel locks the directory),
    so each directory's files all go to one thread, directories in turn.

    The main thread reads and verifies each file's data (every access to the
    image stays on it) and hands the bytes over (views of the mapped image, no
    copy) in batches; a thread only makes host calls, relative to the directory's
    fd. Nothing depends on the timing: names in a directory are unique (a name
    repeated in the image waits for its directory's writes, see _tree); hard
    links, big and damaged files are written by the main thread; a directory's
    owner, mode and times are set, and its fd closed, only once every file in it
    is written (`close`); warnings carry the sequence number of their entry and
    are put in that order at the end. With threads=0 the same batches are
    written on the main thread, in order: a plain sequential extraction."""

    def __init__(self, ex: Extractor, threads: int):
        self.ex = ex
        # one single-thread executor per writer: a directory's batches all go to the
        # same writer, in order (see the class comment on why one directory at a time)
        self.writers = [ThreadPoolExecutor(1, f"bfs-get-{i}") for i in range(threads)]
        self.turn = 0                      # the writer the next directory goes to
        self.inflight: deque = deque()     # (future, files, bytes) submitted, oldest first
        self.inflight_files = self.inflight_bytes = 0
        self.closing: deque = deque()      # (frame, finish?, seq) of finished directories

    def add(self, frame: _Frame, job: tuple) -> None:
        frame.batch.append(job)
        if len(frame.batch) >= BATCH_FILES:
            self.flush(frame)

    def flush(self, frame: _Frame) -> None:
        """Hand the frame's batch to its writer (or write it now, without threads)."""
        if not frame.batch:
            return
        jobs, frame.batch = frame.batch, []
        if not self.writers:
            frame.pending.append(_Done(self.ex._write_batch(frame.fd, jobs)))
            return
        if frame.writer is None:
            frame.writer = self.turn
            self.turn = (self.turn + 1) % len(self.writers)
        nbytes = sum(job[3].size for job in jobs)
        self._make_room(len(jobs), nbytes)
        f = self.writers[frame.writer].submit(self.ex._write_batch, frame.fd, jobs)
        frame.pending.append(f)
        self.inflight.append((f, len(jobs), nbytes))
        self.inflight_files += len(jobs)
        self.inflight_bytes += nbytes

    def _make_room(self, files: int, nbytes: int) -> None:
        """Wait for the oldest batches until this one fits in the bounds of what is
        in flight (files and bytes: what the batches hold)."""
        inflight = self.inflight
        while inflight and (inflight[0][0].done()
                            or self.inflight_files + files > INFLIGHT_FILES
                            or self.inflight_bytes + nbytes > INFLIGHT_BYTES):
            f, n, b = inflight.popleft()
            wait((f,))
            self.inflight_files -= n
            self.inflight_bytes -= b

    def drain(self, frame: _Frame) -> None:
        """Wait until every file handed over in this directory is written, and merge
        what the writes did into the report (an unexpected exception of a thread is
        raised here, in the main thread)."""
        self.flush(frame)
        for f in frame.pending:
            self.ex._merge(f.result())
        frame.pending = []

    def close(self, frame: _Frame, finish: bool) -> None:
        """The frame's directory is walked: set its owner, mode and times (when
        `finish`) and close its fd once its files are written. Deferred, so that the
        walk goes on meanwhile; CLOSING directories at most wait (their fds)."""
        self.flush(frame)
        self.closing.append((frame, finish, self.ex._seq))
        if len(self.closing) > CLOSING:
            self._close_oldest()

    def _close_oldest(self) -> None:
        frame, finish, seq = self.closing.popleft()
        try:
            self.drain(frame)
            if finish:
                self.ex._finish(frame.inode, frame.fd)
        except OSError as e:
            self.ex._skip(f"{frame.path}: {e.strerror}", seq)
        finally:
            os.close(frame.fd)
            frame.fd = None

    def close_all(self) -> None:
        while self.closing:
            self._close_oldest()

    def shutdown(self) -> None:
        """Stop the threads, then close what is left open. After an error (the walk
        stops) batches not started are dropped; the one a thread is writing is
        waited for: no fd a thread uses is closed under it."""
        for writer in self.writers:
            writer.shutdown(wait=True, cancel_futures=True)
        for frame, _finish, _seq in self.closing:
            if frame.fd is not None:
                os.close(frame.fd)
                frame.fd = None
        self.closing.clear()


class _Done:
    """A batch written on the main thread, shaped like a finished Future."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


class Extractor:
    def __init__(self, fs: Filesystem, *, devices: bool = False, keep_setuid: bool = False,
                 owners: bool | None = None, overwrite: bool = False,
                 threads: int | None = None):
        self.fs = fs
        self.devices = devices
        self.keep_setuid = keep_setuid
        self.owners = os.geteuid() == 0 if owners is None else owners
        self.overwrite = overwrite
        self.threads = WRITER_THREADS if threads is None else threads
        self.report = ExtractReport()
        # warnings as (sequence number of the entry, text): threads add theirs out of
        # order, the report lists them in entry order
        self._notes: list[tuple[int, str]] = []
        self._seq = 0
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
            try:
                return self._get(src, dest, recursive=recursive)
            finally:
                self._notes.sort(key=itemgetter(0))     # stable: entry order, then event order
                self.report.skipped = [text for _seq, text in self._notes]

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
                    self._tree(src.where, fd, "/")
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
                    self._tree(src.where, sub, src.path)
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

    def _skip(self, text: str, seq: int | None = None) -> None:
        self._notes.append((self._seq if seq is None else seq, text))

    # ------------------------------------------------------------------ trees

    def _tree(self, where: Where, root_fd: int, path: str) -> None:
        """Extract the contents of directory `where` into the open directory root_fd.

        Iterative (a stack of directory frames, no recursion limit). Host fds stay
        bounded however deep the tree: only the FD_WINDOW deepest frames keep their
        directory open; a shallower one is reopened through ".." of its child (a
        directory this extraction created, checked by device and inode number).
        Small files are written by _Writers (see there)."""
        fs = self.fs
        seen = {(where.subvol, where.inum)}
        children = self._children(fs.readdir(where))
        writers = _Writers(self, self.threads)
        stack = [_Frame(where, os.dup(root_fd), path, children, None, None)]
        try:
            while stack:
                frame = stack[-1]
                kid = next(frame.children, None)
                self._seq += 1
                if kid is None:
                    stack.pop()
                    if stack and stack[-1].fd is None:
                        try:
                            self._reopen(stack[-1], frame)
                        except OSError as e:
                            self._skip(f"{frame.path}: {e.strerror}")
                            writers.close(frame, finish=False)
                            break       # the parent cannot be reopened: stop here
                    writers.close(frame, finish=frame.name is not None)
                    continue
                dfd, dpath = frame.fd, frame.path
                entry = kid.entry
                name = entry.name
                shown = _show(dpath, name)
                problem = name_problem(name)
                if problem:
                    self._skip(f"{shown}: unsafe name ({problem}); skipped")
                    continue
                if name == frame.last_name:
                    # a name repeated in the image (entries are in name order): the
                    # host has it, or not, as if everything before were written in order
                    writers.drain(frame)
                    repeated = True
                else:
                    frame.last_name = name
                    repeated = False
                child = kid.inode if kid.inode is not _UNREAD else fs.get_inode(entry.where)
                if child is None:
                    self._skip(f"{shown}: missing inode; skipped")
                    continue
                if child.is_dir:
                    if (entry.where.subvol, entry.where.inum) in seen:
                        self._skip(f"{shown}: directory loop; skipped")
                        continue
                    seen.add((entry.where.subvol, entry.where.inum))
                    try:
                        os.mkdir(name, 0o700, dir_fd=dfd)
                        sub = os.open(name, DIR_FLAGS, dir_fd=dfd)
                    except OSError as e:
                        self._skip(f"{shown}: {e.strerror}; skipped")
                        continue
                    writers.flush(frame)        # its files get written while we descend
                    self.report.dirs += 1
                    self._xattrs(entry.where, sub, shown, kid.xattrs)
                    try:
                        children = self._children(fs.readdir(entry.where))
                    except FormatError as e:
                        self._damaged(shown, e)
                        children = iter(())
                    stack.append(_Frame(entry.where, sub, shown, children, name, child))
                    if len(stack) > FD_WINDOW + 1:
                        old = stack[-1 - FD_WINDOW]
                        if old.fd is not None:
                            writers.drain(old)
                            os.close(old.fd)
                            old.fd = None
                    continue
                job = None if repeated else self._small_file_job(entry.where, child, kid, shown)
                if job is not None:
                    writers.add(frame, job)
                else:
                    self._one(entry.where, child, dfd, name, shown, kid)
            for frame in stack:         # left when stopped early: their files are written
                writers.drain(frame)
            writers.close_all()
        finally:
            writers.shutdown()
            for frame in stack:
                if frame.fd is not None:
                    os.close(frame.fd)

    def _children(self, entries: list[Entry]):
        """_Child of each entry, in name order; metadata read BATCH children at a time."""
        entries.sort(key=lambda e: e.name)
        for i in range(0, len(entries), BATCH):
            yield from read_children(self.fs, entries[i:i + BATCH])

    @staticmethod
    def _reopen(parent: _Frame, child: _Frame) -> None:
        """Reopen the closed fd of `parent` through ".." of its child `child` (whose
        fd is still open), checking it is the directory it was."""
        fd = os.open(b"..", DIR_FLAGS, dir_fd=child.fd)
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != parent.host_id:
            os.close(fd)
            raise OSError(errno.ESTALE, f"{parent.path}: directory moved during extraction")
        parent.fd = fd

    # ------------------------------------------------------------------ small files (threads)

    def _small_file_job(self, where: Where, inode: Inode, kid: _Child, shown: str):
        """(seq, name, shown, inode, data pieces, xattrs) for a writer thread: a regular
        file of at most SMALL_FILE bytes, not hard-linked, whose data and xattrs were
        read with its batch; its data is read and verified here. None when the file
        takes the main thread's path instead (_one): also when reading it failed,
        _one then meets and reports the failure as for any file."""
        if (not inode.is_reg or inode.nlink > 1 or inode.size > SMALL_FILE
                or kid.data is _UNREAD or kid.xattrs is _UNREAD):
            return None
        try:
            pieces = list(self._pieces(ReadContext(self.fs.store, shown), where, inode,
                                       kid.data))
        except (FormatError, OSError):     # damage, or a read error (DeviceError)
            return None
        return (self._seq, kid.entry.name, shown, inode, pieces, kid.xattrs)

    def _write_batch(self, dfd: int, jobs: list) -> _Tally:
        """Runs on a writer thread: host calls only, nothing of the image or of self
        is changed; what happened comes back in the _Tally."""
        tally = _Tally()
        for seq, name, shown, inode, pieces, xattrs in jobs:
            set_xattrs = None
            if xattrs:
                def set_xattrs(fd, x=xattrs, s=shown, q=seq):
                    self._set_xattrs(fd, s, x, tally.notes, q)
            try:
                self._write_file(dfd, name, inode, pieces, tally, set_xattrs)
            except OSError as e:
                tally.notes.append((seq, _host_error(shown, e)))
        return tally

    def _merge(self, tally: _Tally) -> None:
        self.report.files += tally.files
        self.report.bytes += tally.bytes
        self._notes += tally.notes

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
                data_keys = xattrs = _UNREAD
                if kid is not None:
                    data_keys, xattrs = kid.data, kid.xattrs
                pieces = self._pieces(ReadContext(self.fs.store, shown), where, inode,
                                      data_keys)
                self._write_file(dfd, name, inode, pieces, self.report,
                                 lambda fd: self._xattrs(where, fd, shown, xattrs))
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
                    self._skip(f"{shown}: symlink target {target!r} cannot exist on a host; "
                               "skipped")
                    return
                os.symlink(target, name, dir_fd=dfd)
                self.report.symlinks += 1
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                if not self.devices:
                    self._skip(f"{shown}: device node not created (use --devices)")
                    return
                os.mknod(name, stat.S_IFMT(mode) | self._mode(mode), inode.rdev, dir_fd=dfd)
            elif stat.S_ISFIFO(mode):
                os.mkfifo(name, self._mode(mode) & 0o7777, dir_fd=dfd)
            elif stat.S_ISSOCK(mode):
                # an inode only (as cp -a, mke2fs -d): nothing listens on it
                os.mknod(name, stat.S_IFSOCK | self._mode(mode), dir_fd=dfd)
            self._finish(inode, name, dfd)
        except OSError as e:
            self._skip(_host_error(shown, e))
        except FormatError as e:
            self._damaged(shown, e)

    def _damaged(self, shown: str, e: Exception) -> None:
        msg = str(e)
        self._skip(msg if msg.startswith(shown) else f"{shown}: {msg}")
        self.report.damaged += 1

    def _pieces(self, ctx: ReadContext, where: Where, inode: Inode, data_keys):
        """(file offset, bytes) of each piece of data the file has, verified, in file
        order; holes (and the zero tail a key may claim beyond its inline bytes) are
        left out. data_keys: what read_children found, if it did (else read here,
        when the first piece is asked for)."""
        size = inode.size
        if data_keys is _UNREAD:
            data_keys = visible_extents(self.fs.btrees, where.inum,
                                        self.fs.visible(where.snapshot), 0, -(-size // SECTOR))
        for k in data_keys:
            start = k.start * SECTOR
            if start >= size:
                break
            limit = min(k.end * SECTOR, size) - start
            if k.type == KeyType.extent:
                e = decode_extent(k.val)
                off = e.offset * SECTOR
                yield start, self.window.region(ctx, e, start)[off:off + limit]
            elif k.type == KeyType.inline_data:
                yield start, k.val[:limit]
            else:
                yield start, key_data(ctx, k, limit)

    def _write_file(self, dfd: int, name: bytes, inode: Inode, pieces, tally,
                    set_xattrs) -> None:
        """Create `name` in dfd and write the pieces, only those: holes stay holes,
        so a file claiming 2^62 bytes costs what it holds. A file that cannot be
        extracted whole is removed. tally (files, bytes) counts it once written;
        set_xattrs(fd) copies its xattrs (None or empty: it has none)."""
        fd = os.open(name, WRITE_FLAGS, 0o600, dir_fd=dfd)
        done = False
        try:
            size = inode.size
            if size >= 1 << 63:
                raise OSError(errno.EFBIG, f"file size {size} not possible on the host")
            end = 0         # the file's size so far (it was created empty)
            for start, data in pieces:
                view = memoryview(data)
                while view:
                    n = os.pwrite(fd, view, start)
                    view, start = view[n:], start + n
                end = max(end, start)
            if set_xattrs:
                set_xattrs(fd)
            if end != size:     # a hole at the end, or data keys claiming less than the size
                try:
                    os.ftruncate(fd, size)
                except OSError as e:
                    if e.errno in (errno.EFBIG, errno.EINVAL):
                        raise OSError(e.errno, f"file size {size} not possible on the host") \
                            from None
                    raise
            tally.files += 1
            tally.bytes += size
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
        (main thread)."""
        if xattrs is _UNREAD:
            try:
                xattrs = self.fs.listxattr(where)
            except FormatError as e:
                self._damaged(shown, e)
                return
        self._set_xattrs(fd, shown, xattrs, self._notes, self._seq)

    def _set_xattrs(self, fd: int, shown: str, xattrs, notes: list, seq: int) -> None:
        """user.* always; others only as root. Invalid names are noted in `notes`."""
        for x in xattrs:
            full = x.full_name
            if not full.startswith(b"user.") and not self.root:
                continue
            if b"\0" in full or not x.name:
                notes.append((seq, f"{shown}: xattr {full!r}: invalid name; skipped"))
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


def _host_error(shown: str, e: OSError) -> str:
    if isinstance(e, FileExistsError):
        return f"{shown}: already exists on the host; skipped"
    return f"{shown}: {e.strerror}; skipped"


def _show(dpath: str, name: bytes) -> str:
    return (dpath.rstrip("/") + "/" + name.decode("utf-8", "backslashreplace"))
