"""The device layer: the only code that touches image files and block devices.

One interface (`Device`) with three implementations:
  * FileDevice: a regular image file or a block device (/dev/loopN, /dev/sdX).
    Writers hold an exclusive lock (flock on files, O_EXCL on block devices) so a
    second writer gets a clear error; readers take a shared flock on files.
  * MemoryDevice: sparse, in memory, for tests.
  * RecordingDevice: wraps another device and logs every write and flush, so a
    crash harness can rebuild the device as it was at any point (io/crash.py).
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
import struct

from ..errors import DeviceBusyError, DeviceError, ReadOnlyError

BLKGETSIZE64 = 0x80081272
BLKSSZGET = 0x1268
BLKDISCARD = 0x1277


class Device:
    """A byte-addressed device. Offsets and lengths are bytes."""

    name: str = "device"
    size: int = 0
    sector_size: int = 512
    writable: bool = False
    is_block_device: bool = False

    def read(self, offset: int, length: int) -> bytes:
        raise NotImplementedError

    def map(self, offset: int, length: int) -> memoryview | None:
        """A read-only view of [offset, offset + length) without copying it, or None
        when the device cannot map (callers then read)."""
        return None

    def write(self, offset: int, data: bytes) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Make every completed write durable (fsync / cache flush)."""
        raise NotImplementedError

    def discard(self, offset: int, length: int) -> None:
        """Tell the device the range no longer holds data (best effort)."""

    def start_writeback(self, offset: int, length: int) -> None:
        """Start writing the range to the medium now, without waiting (best effort:
        the next flush does whatever this does not)."""

    def close(self) -> None:
        pass

    def _check_range(self, offset: int, length: int) -> None:
        if offset < 0 or length < 0 or offset + length > self.size:
            raise DeviceError(
                f"{self.name}: access [{offset}, {offset + length}) beyond the end of the "
                f"device ({self.size} bytes)")

    def _check_write(self, offset: int, length: int) -> None:
        if not self.writable:
            raise ReadOnlyError(f"{self.name}: opened read-only")
        self._check_range(offset, length)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_sync_file_range = None
SYNC_FILE_RANGE_WRITE = 2


def _libc_call(name: str, *argtypes):
    """A libc function through ctypes (imported only when needed), or None."""
    try:
        import ctypes

        fn = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (AttributeError, OSError):
        return None
    fn.argtypes = [getattr(ctypes, t) for t in argtypes]
    return fn


# the most of a file mapped at once to punch holes: 16 mappings for a 16 TiB image
_PUNCH_SPAN = 1 << 40


def _punch_hole(fd: int, offset: int, length: int) -> None:
    """Free the file's blocks in the range, keeping its size: madvise(MADV_REMOVE)
    on a shared mapping of the range, which the kernel does as fallocate(
    PUNCH_HOLE | KEEP_SIZE) (madvise(2)), through the mmap module instead of
    ctypes, whose import cost 2-3 ms of every command that frees a bucket.
    Whole pages only (a mapping starts at a page); OSError where the file
    system cannot."""
    # (imported when first needed: most commands free nothing)
    import mmap

    page = mmap.PAGESIZE
    start = -(-offset // page) * page
    end = (offset + length) // page * page
    while start < end:
        n = min(end - start, _PUNCH_SPAN)
        with mmap.mmap(fd, n, offset=start) as m:
            m.madvise(mmap.MADV_REMOVE)
        start += n


class FileDevice(Device):
    """A regular image file or a block device."""

    def __init__(self, path: str, *, write: bool = False, create_size: int | None = None):
        self.name = path
        self.writable = write
        flags = os.O_CLOEXEC | (os.O_RDWR if write else os.O_RDONLY)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            if create_size is None:
                raise DeviceError(f"{path}: no such file") from None
            st = None
        except OSError as e:
            raise DeviceError(f"{path}: {e.strerror}") from None
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise DeviceError(f"{path}: is a directory, not an image file or block device")
        if st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
            raise DeviceError(f"{path}: not a regular file or block device")
        self.is_block_device = st is not None and stat.S_ISBLK(st.st_mode)
        if st is None:
            flags |= os.O_CREAT
        if self.is_block_device and write:
            flags |= os.O_EXCL
        try:
            self.fd = os.open(path, flags, 0o644)
        except OSError as e:
            if e.errno == errno.EBUSY:
                raise DeviceBusyError(
                    f"{path}: device is busy (mounted, or opened by another writer)") from None
            if e.errno in (errno.EACCES, errno.EROFS, errno.EPERM) and write:
                raise DeviceError(f"{path}: cannot open for writing: {e.strerror}") from None
            raise DeviceError(f"{path}: {e.strerror}") from None
        try:
            if not self.is_block_device:
                self._lock(write)
            if st is None:
                os.ftruncate(self.fd, create_size)
            self.size, self.sector_size = self._probe_size()
        except BaseException:
            os.close(self.fd)
            raise

    def _lock(self, write: bool) -> None:
        try:
            fcntl.flock(self.fd, (fcntl.LOCK_EX if write else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            what = "another process is writing it" if not write else "another process is using it"
            raise DeviceBusyError(f"{self.name}: image is busy: {what}") from None

    def _probe_size(self) -> tuple[int, int]:
        if self.is_block_device:
            buf = fcntl.ioctl(self.fd, BLKGETSIZE64, b"\0" * 8)
            size = struct.unpack("<Q", buf)[0]
            buf = fcntl.ioctl(self.fd, BLKSSZGET, b"\0" * 4)
            return size, struct.unpack("<I", buf)[0]
        return os.fstat(self.fd).st_size, 512

    def read(self, offset: int, length: int) -> bytes:
        self._check_range(offset, length)
        try:
            data = os.pread(self.fd, length, offset)
            while len(data) < length:
                more = os.pread(self.fd, length - len(data), offset + len(data))
                if not more:
                    raise DeviceError(f"{self.name}: short read at {offset}")
                data += more
            return data
        except OSError as e:
            raise DeviceError(f"{self.name}: read error at byte {offset}: {e.strerror}") from None

    def map(self, offset: int, length: int) -> memoryview | None:
        """The range as a view of a read-only shared mapping: streaming reads (cat)
        then checksum and write out the page cache directly, without pread's copy
        into a fresh buffer (measured: 1 GiB streams in ~0.8x the time dd takes,
        against ~1.3x with pread). The mapping is unmapped when the last view of
        it is released. The range is checked against the size probed at open:
        readers hold a shared lock, so no bfs writer shrinks the file meanwhile."""
        self._check_range(offset, length)
        if length == 0:
            return None
        import mmap

        start = offset - offset % mmap.ALLOCATIONGRANULARITY
        try:
            m = mmap.mmap(self.fd, offset + length - start, prot=mmap.PROT_READ,
                          flags=mmap.MAP_SHARED, offset=start)
        except (OSError, ValueError):
            return None
        return memoryview(m)[offset - start:]

    def write(self, offset: int, data) -> None:
        self._check_write(offset, len(data))
        view = memoryview(data)
        try:
            while view:
                n = os.pwrite(self.fd, view, offset)
                view = view[n:]
                offset += n
        except OSError as e:
            raise DeviceError(f"{self.name}: write error at byte {offset}: {e.strerror}") from None

    def flush(self) -> None:
        if not self.writable:
            return
        try:
            os.fsync(self.fd)
        except OSError as e:
            raise DeviceError(f"{self.name}: flush failed: {e.strerror}") from None

    def discard(self, offset: int, length: int) -> None:
        if not self.writable or length <= 0:
            return
        self._check_range(offset, length)
        try:
            if self.is_block_device:
                fcntl.ioctl(self.fd, BLKDISCARD, struct.pack("<QQ", offset, length))
            else:
                _punch_hole(self.fd, offset, length)
        except (OSError, ValueError):
            pass  # discard is advisory: unsupported devices keep the data

    def start_writeback(self, offset: int, length: int) -> None:
        """sync_file_range(WRITE), which does not wait: a bulk writer (populate)
        has the disk work while it reads the next files, and its final fsync
        finds little left (stdlib tree: that fsync 0.12-0.14 s -> 0.01 s)."""
        global _sync_file_range
        if not self.writable:
            return
        if _sync_file_range is None:
            _sync_file_range = (_libc_call("sync_file_range", "c_int", "c_int64", "c_int64",
                                           "c_uint") or (lambda *_args: 0))
        _sync_file_range(self.fd, offset, length, SYNC_FILE_RANGE_WRITE)

    def close(self) -> None:
        if getattr(self, "fd", None) is not None:
            os.close(self.fd)
            self.fd = None


class MemoryDevice(Device):
    """A sparse in-memory device (unwritten ranges read as zeros)."""

    CHUNK = 65536

    def __init__(self, size: int, *, name: str = "memory", writable: bool = True):
        self.size = size
        self.name = name
        self.writable = writable
        self.chunks: dict[int, bytearray] = {}

    def read(self, offset: int, length: int) -> bytes:
        self._check_range(offset, length)
        out = bytearray(length)
        pos = offset
        while pos < offset + length:
            idx, within = divmod(pos, self.CHUNK)
            n = min(self.CHUNK - within, offset + length - pos)
            chunk = self.chunks.get(idx)
            if chunk is not None:
                out[pos - offset:pos - offset + n] = chunk[within:within + n]
            pos += n
        return bytes(out)

    def write(self, offset: int, data) -> None:
        self._check_write(offset, len(data))
        data = memoryview(data)
        pos = 0
        while pos < len(data):
            idx, within = divmod(offset + pos, self.CHUNK)
            n = min(self.CHUNK - within, len(data) - pos)
            chunk = self.chunks.get(idx)
            if chunk is None:
                chunk = self.chunks[idx] = bytearray(self.CHUNK)
            chunk[within:within + n] = data[pos:pos + n]
            pos += n

    def flush(self) -> None:
        pass

    def discard(self, offset: int, length: int) -> None:
        if not self.writable:
            return
        self._check_range(offset, length)
        end = offset + length
        first, last = -(-offset // self.CHUNK), end // self.CHUNK
        # only the chunks that exist: a discard of 16 TiB must not walk 2^28 indexes
        for idx in [i for i in self.chunks if first <= i < last]:
            del self.chunks[idx]

    def clone(self, *, writable: bool = True) -> MemoryDevice:
        dev = MemoryDevice(self.size, name=self.name, writable=writable)
        dev.chunks = {i: bytearray(c) for i, c in self.chunks.items()}
        return dev

    def allocated_bytes(self) -> int:
        return len(self.chunks) * self.CHUNK


class WriteOp:
    """One logged write. Compared and hashed by value (tests compare logs)."""

    __slots__ = ("offset", "data")

    def __init__(self, offset: int, data: bytes):
        self.offset = offset
        self.data = data

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return (self.offset, self.data) == (other.offset, other.data)

    def __hash__(self) -> int:
        return hash((self.offset, self.data))

    def __repr__(self) -> str:
        return f"WriteOp(offset={self.offset!r}, data={self.data!r})"


class FlushOp:
    """One logged flush; every flush equals every other."""

    __slots__ = ()

    def __eq__(self, other):
        return other.__class__ is self.__class__ or NotImplemented

    def __hash__(self) -> int:
        return hash(FlushOp)

    def __repr__(self) -> str:
        return "FlushOp()"


class RecordingDevice(Device):
    """Passes everything to `inner` and logs each write and flush in `log`."""

    def __init__(self, inner: Device):
        self.inner = inner
        self.name = inner.name
        self.size = inner.size
        self.sector_size = inner.sector_size
        self.writable = inner.writable
        self.log: list[WriteOp | FlushOp] = []

    def read(self, offset: int, length: int) -> bytes:
        return self.inner.read(offset, length)

    def write(self, offset: int, data) -> None:
        self.inner.write(offset, data)
        self.log.append(WriteOp(offset, bytes(data)))

    def flush(self) -> None:
        self.inner.flush()
        self.log.append(FlushOp())

    def discard(self, offset: int, length: int) -> None:
        # A discard may or may not reach the medium before a crash; the crash
        # harness treats discarded ranges as keeping their old contents, which
        # is the state the format must tolerate.
        self.inner.discard(offset, length)

    def close(self) -> None:
        self.inner.close()


def open_device(path: str, *, write: bool = False, create_size: int | None = None) -> FileDevice:
    return FileDevice(path, write=write, create_size=create_size)
