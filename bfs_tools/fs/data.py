"""File data: writing extents (checksummed regions on the device), reading them
back with checksum verification, and the range edits behind write/truncate.

Offsets in the extents btree are 512-byte sectors; data is written in whole
blocks (the tail of the last block is zero), so bytes past i_size inside an
allocated block always read as zeros. Files up to inline_data_max bytes keep
their data in an inline_data key instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

from ..checksum import checksum
from ..errors import ChecksumError, CorruptionError, FormatError
from ..extents import Extent, decode_extent, extent_key
from ..formats.constants import U32_MAX, U64_MAX
from ..formats.fsck_errors import BY_NAME as ERR
from ..formats.ids import BtreeId, KeyType
from ..keys import Key, filter_visible
from .extent_update import replace_range

SECTOR = 512
E = BtreeId.extents
END_OF_FILE = (1 << 63) // SECTOR   # "to the end": beyond any possible key


def round_up(n: int, to: int) -> int:
    return -(-n // to) * to


WRITE_BUFFER = 2 << 20      # bytes of contiguous device space gathered per pwrite (2 MiB:
                            # stays in cache between the read into it and the write; 8 MiB
                            # cost more system time)


class DataWriter:
    """Writes file data into freshly allocated space: extents of at most
    extent_max, each inside one bucket, padded to a block.

    Every byte lands once in one reused buffer, at the offset it takes on the
    device: host files are read into it (copy_fd: preadv), other data copied in;
    it is checksummed there and written with one pwrite per WRITE_BUFFER of
    contiguous space (populate writes thousands of files; copying each byte
    three times into fresh buffers was ~10% of a populate). Each flush also
    starts the device's writeback of what it wrote (Device.start_writeback)."""

    def __init__(self, store, csum_type: int):
        self.store = store
        self.csum_type = csum_type
        self.block = store.sb.block_size
        self.extent_max = store.sb.extent_max
        self.alloc = store.allocator
        self.buf = memoryview(bytearray(max(WRITE_BUFFER, 2 * self.extent_max)))
        self.used = 0               # bytes of buf waiting to be written
        self.buf_start = 0          # device byte offset of buf[0]

    def _space(self, nbytes: int) -> tuple[int, int, int, int]:
        """(sector, gen, granted bytes, offset in buf) for up to nbytes of data."""
        block = self.block
        sector, gen, grant = self.alloc.allocate_data(round_up(min(nbytes, self.extent_max),
                                                               block))
        offset = sector * SECTOR
        if self.used and (offset != self.buf_start + self.used
                          or self.used + grant > len(self.buf)):
            self.flush()
        if not self.used:
            self.buf_start = offset
        return sector, gen, grant, self.used

    def _region(self, sector: int, gen: int, grant: int, at: int, n: int):
        """n data bytes are in buf[at:]: pad them to a block, give back what the
        grant has beyond that, checksum; (sectors, Extent)."""
        size = round_up(n, self.block)
        if size > n:
            self.buf[at + n:at + size] = bytes(size - n)   # the buffer is reused: zero the tail
        if size < grant:
            self.alloc.release_data(sector + size // SECTOR, grant - size)
        self.used = at + size
        sectors = size // SECTOR
        csum = checksum(self.csum_type, self.buf[at:at + size])
        return sectors, Extent(sector, gen, self.csum_type, sectors, 0, csum)

    def write(self, data) -> list[tuple[int, Extent]]:
        """Write bytes `data`; [(sectors of file data covered, extent)] in order."""
        out = []
        view = memoryview(data)
        while view:
            sector, gen, grant, at = self._space(len(view))
            n = min(len(view), grant)
            self.buf[at:at + n] = view[:n]
            out.append(self._region(sector, gen, grant, at, n))
            view = view[n:]
        return out

    def copy_fd(self, fd: int, pos: int, end: int) -> tuple[list[tuple[int, Extent]], int]:
        """Write bytes [pos, end) of host file fd: ([(sectors, extent)], bytes copied),
        fewer than asked if the file ends early."""
        out = []
        start = pos
        while pos < end:
            sector, gen, grant, at = self._space(end - pos)
            want = min(end - pos, grant)
            n = os.preadv(fd, [self.buf[at:at + want]], pos)
            if n == 0:
                self.alloc.release_data(sector, grant)
                break
            out.append(self._region(sector, gen, grant, at, n))
            pos += n
            if n < want:        # the file ended early (shrank since its stat)
                break
        return out, pos - start

    def flush(self) -> None:
        if self.used:
            self.store.dev.write(self.buf_start, self.buf[:self.used])
            self.store.dev.start_writeback(self.buf_start, self.used)
            self.used = 0


def data_keys(inum: int, snapshot: int, start_sector: int, extents) -> list[Key]:
    keys = []
    at = start_sector
    for sectors, e in extents:
        keys.append(extent_key((inum, at + sectors, snapshot), sectors, e))
        at += sectors
    return keys


def inline_key(inum: int, snapshot: int, data: bytes) -> Key:
    sectors = max(1, round_up(len(data), SECTOR) // SECTOR)
    return Key((inum, sectors, snapshot), KeyType.inline_data, bytes(data), size=sectors)


# ---------------------------------------------------------------------- reading


@dataclass
class ReadContext:
    store: object
    what: str                  # name for error messages (the path)
    cache_sector: int = -1
    cache_data: bytes = b""


def check_region(ctx: ReadContext, e: Extent, file_offset: int) -> None:
    """An extent's region must lie on the device and inside one bucket (a corrupt
    pointer must not make a read run off the device or claim gigabytes)."""
    store = ctx.store
    length = e.region_sectors * SECTOR
    if e.sector * SECTOR + length > store.dev.size or e.sector == 0:
        raise CorruptionError(f"{ctx.what}: extent at file offset {file_offset} points outside "
                              "the device", ERR["ptr_beyond_device"].id)
    if length > store.sb.bucket_size:   # a region never spans buckets: bounds the read
        raise CorruptionError(f"{ctx.what}: extent at file offset {file_offset} claims a "
                              f"region of {length} bytes, more than a bucket",
                              ERR["ptr_beyond_device"].id)


def verify_region(ctx: ReadContext, e: Extent, data, file_offset: int) -> None:
    if checksum(e.csum_type, data) != e.csum:
        raise ChecksumError(f"{ctx.what}: data checksum mismatch at file offset {file_offset} "
                            f"(device sector {e.sector})")


def _region(ctx: ReadContext, e: Extent, file_offset: int) -> bytes:
    if e.sector == ctx.cache_sector:
        return ctx.cache_data
    check_region(ctx, e, file_offset)
    data = ctx.store.dev.read(e.sector * SECTOR, e.region_sectors * SECTOR)
    verify_region(ctx, e, data, file_offset)
    ctx.cache_sector, ctx.cache_data = e.sector, data
    return data


def key_data(ctx: ReadContext, k: Key, limit: int | None = None) -> bytes:
    """The bytes of the file range [k.start, k.end) sectors that key k maps; only
    the first `limit` bytes when given (a key may claim up to 2 TiB: callers that
    do not need all of it must not build it)."""
    length = k.size * SECTOR
    if limit is not None:
        length = max(0, min(length, limit))
    t = k.type
    if t == KeyType.extent:
        e = decode_extent(k.val)
        region = _region(ctx, e, k.start * SECTOR)
        return region[e.offset * SECTOR:e.offset * SECTOR + length]
    if t == KeyType.inline_data:
        return k.val[:length].ljust(length, b"\0")
    if t == KeyType.reflink_p:
        return _indirect_data(ctx, k, length)
    if t == KeyType.error:
        raise CorruptionError(f"{ctx.what}: data at file offset {k.start * SECTOR} was lost "
                              "(marked by fsck)", ERR["reflink_p_to_missing"].id)
    return b"\0" * length


def _indirect_data(ctx: ReadContext, k: Key, length: int | None = None) -> bytes:
    from ..reflink import decode_reflink_p

    p = decode_reflink_p(k.val)
    sectors = k.size if length is None else -(-length // SECTOR)
    lo, hi = p.idx, p.idx + sectors
    out = bytearray(sectors * SECTOR)
    found = lo
    for v in ctx.store.btrees.iter(BtreeId.reflink, (0, lo + 1, 0), (0, U64_MAX, 0)):
        if v.start >= hi:
            break
        if v.start > found:
            break
        a, b = max(v.start, lo), min(v.end, hi)
        if v.type == KeyType.reflink_v:
            e = decode_extent(v.val[8:])
            region = _region(ctx, e, (k.start + a - lo) * SECTOR)
            off = (e.offset + a - v.start) * SECTOR
            piece = region[off:off + (b - a) * SECTOR]
        elif v.type == KeyType.indirect_inline_data:
            raw = v.val[8:]
            piece = raw[(a - v.start) * SECTOR:(b - v.start) * SECTOR].ljust((b - a) * SECTOR, b"\0")
        else:
            raise CorruptionError(f"{ctx.what}: shared data at file offset "
                                  f"{(k.start + a - lo) * SECTOR} was lost",
                                  ERR["reflink_p_to_missing"].id)
        out[(a - lo) * SECTOR:(b - lo) * SECTOR] = piece
        found = b
    if found < hi:
        raise CorruptionError(f"{ctx.what}: reflink pointer at file offset {k.start * SECTOR} "
                              "refers to missing shared data", ERR["reflink_p_to_missing"].id)
    return bytes(out) if length is None else bytes(out[:length])


def visible_extents(btrees_or_trans, inum: int, visible, start_sector: int = 0,
                    end_sector: int = END_OF_FILE) -> Iterator[Key]:
    """The keys a snapshot sees over [start, end) sectors of a file, in order
    (whiteouts and holes skipped)."""
    it = btrees_or_trans.iter(E, (inum, start_sector + 1, 0), (inum, U64_MAX, U32_MAX))
    for k in filter_visible(it, visible):
        if k.start >= end_sector:
            return
        yield k


def read_range(store, inum: int, visible, offset: int, length: int, what: str,
               src=None, keys=None) -> bytes:
    """`length` bytes at `offset` (holes read as zeros; the caller clips to i_size).

    src: where to read keys from (default the btrees; a transaction to see its
    own queued updates). keys: the file's visible data keys in order, when the
    caller has read them already."""
    if length <= 0:
        return b""
    ctx = ReadContext(store, what)
    out = bytearray(length)
    s0 = offset // SECTOR
    s1 = -(-(offset + length) // SECTOR)
    if keys is None:
        keys = visible_extents(src or store.btrees, inum, visible, s0, s1)
    for k in keys:
        kstart = k.start * SECTOR
        a = max(kstart, offset)
        b = min(k.end * SECTOR, offset + length)
        if a < b:
            data = key_data(ctx, k, b - kstart)
            out[a - offset:b - offset] = data[a - kstart:b - kstart]
    return bytes(out)


STREAM_RUN = 16 << 20   # bytes iter_read maps (or reads) from the device at once


class _RunReader:
    """Regions for a stream, read in runs: the regions of the next extents that
    follow each other on the device (what a sequential write leaves) are mapped
    (Device.map) or else read with one pread, and each region's checksum is
    verified on that view (no copy). Per 256 KiB extent this saves a system call,
    an allocation and a copy. Each run is its own mapping or bytes object, so
    pieces handed out stay valid as long as a caller keeps them.

    The checksums of a large run are computed as soon as it is mapped, most of
    them on a worker thread (the checksum functions release the GIL on large
    buffers), so a stream verifies on two cores. The results are only consulted
    when a region is handed out: a bad region still fails exactly where the
    stream reaches it, after every good byte before it."""

    def __init__(self, ctx: ReadContext, run: int):
        self.ctx = ctx
        self.run = run
        self.view = memoryview(b"")
        self.lo = self.hi = 0       # device sectors held in the buffer
        self.checked: dict[tuple, bool] = {}   # region identity -> checksum matched
        self.pending = None         # the worker's share of `checked`, while it computes

    def region(self, e: Extent, file_offset: int, ahead: list[Extent]) -> memoryview:
        """The verified region of `e`; `ahead` lists the extents the stream reads
        next, in order (what the run may include)."""
        end = e.sector + e.region_sectors
        if not (self.lo <= e.sector and end <= self.hi):
            check_region(self.ctx, e, file_offset)
            limit = max(self.run // SECTOR, e.region_sectors)
            members = [e]
            for f in ahead:
                f_end = f.sector + f.region_sectors
                if e.sector <= f.sector and f_end <= end:
                    members.append(f)           # a region already in the run (a split extent)
                    continue
                if f.sector != end or f_end - e.sector > limit or f_end * SECTOR > self.ctx.store.dev.size:
                    break
                members.append(f)
                end = f_end
            dev = self.ctx.store.dev
            offset, length = e.sector * SECTOR, (end - e.sector) * SECTOR
            view = dev.map(offset, length)
            self.view = view if view is not None else memoryview(dev.read(offset, length))
            self.lo, self.hi = e.sector, end
            self.checked, self.pending = _checksums_ahead(self.view, e.sector, members)
        a = (e.sector - self.lo) * SECTOR
        data = self.view[a:a + e.region_sectors * SECTOR]
        ident = (e.sector, e.region_sectors, e.csum_type, e.csum)
        ok = self.checked.get(ident)
        if ok is None and self.pending is not None:
            self.checked.update(self.pending.result())
            self.pending = None
            ok = self.checked.get(ident)
        if ok is not True:
            check_region(self.ctx, e, file_offset)
            if ok is None:
                verify_region(self.ctx, e, data, file_offset)
                self.checked[ident] = True
            else:
                raise ChecksumError(f"{self.ctx.what}: data checksum mismatch at file offset "
                                    f"{file_offset} (device sector {e.sector})")
        return data


PARALLEL_MIN = 4 << 20      # runs smaller than this are verified in the stream's thread
# The stream's own thread also hands out every region, so it checksums the smaller
# share of a run (1 GiB in-process: 164 ms at 0.5, 150 ms at 0.42, 160 at 0.35).
MAIN_SHARE = 0.42
_worker = None              # the one extra thread, created on first use


def _checksums_ahead(view: memoryview, base: int, extents: list[Extent]):
    """({(sector, region_sectors, csum_type, csum): checksum matches}, future) for the
    regions of a run starting at device sector `base`: the first MAIN_SHARE
    computed here, the rest by the worker thread (a future of its dict, None when
    there is nothing left to wait for). While the stream hands out the first part
    the worker finishes the rest. Small runs get ({}, None): each region is then
    verified when handed out."""
    global _worker
    regions = {(f.sector, f.region_sectors, f.csum_type, f.csum): f for f in extents}
    if len(regions) < 2 or len(view) < PARALLEL_MIN or (os.cpu_count() or 1) < 2:
        return {}, None

    def verify(items):
        out = {}
        for ident, f in items:
            a = (f.sector - base) * SECTOR
            try:
                out[ident] = checksum(f.csum_type, view[a:a + f.region_sectors * SECTOR]) == f.csum
            except FormatError:
                pass    # an unknown checksum type: reported when the stream gets there
        return out

    items = list(regions.items())
    mine = int(len(items) * MAIN_SHARE)
    if _worker is None:
        from concurrent.futures import ThreadPoolExecutor

        _worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bfs-verify")
    later = _worker.submit(verify, items[mine:])
    return verify(items[:mine]), later


def _windows(keys: Iterator[Key], size: int, run: int) -> Iterator[list]:
    """The keys below `size` in lists of about `run` bytes of extent regions, each
    key with its decoded extent (None for other key types): the read-ahead a
    _RunReader plans its runs from."""
    window: list = []
    ahead = 0
    for k in keys:
        if k.start * SECTOR >= size:
            break
        e = decode_extent(k.val) if k.type == KeyType.extent else None
        window.append((k, e))
        if e is not None:
            ahead += e.region_sectors * SECTOR
        if ahead >= run or len(window) >= 4096:
            yield window
            window, ahead = [], 0
    if window:
        yield window


def iter_read(store, inum: int, visible, size: int, what: str,
              chunk: int = 4 << 20) -> Iterator[bytes]:
    """The file's bytes [0, size) as a stream of pieces: each extent's data as read
    and verified (once per region), holes as zeros at most `chunk` bytes a piece (a
    key or a hole may claim terabytes: nothing is built whole). Pieces are
    bytes-like (bytes or memoryviews of the read buffers)."""
    ctx = ReadContext(store, what)
    reader = _RunReader(ctx, STREAM_RUN)
    pos = 0
    keys = visible_extents(store.btrees, inum, visible, 0, -(-size // SECTOR))
    for window in _windows(keys, size, STREAM_RUN):
        extents = [e for _, e in window if e is not None]
        j = 0                       # index in `extents` of the next extent key
        for k, e in window:
            kstart = k.start * SECTOR
            if kstart > pos:
                yield from _zeros(kstart - pos, chunk)
                pos = kstart
            kend = min(k.end * SECTOR, size)
            if e is not None:
                j += 1
                region = reader.region(e, kstart, extents[j:j + 64])
                base = e.offset * SECTOR - kstart
                data = region[base + pos:base + kend]
            elif k.type == KeyType.inline_data:
                # the value, then zeros (a key may claim far more than it holds)
                data = k.val[pos - kstart:kend - kstart]
            else:
                data = key_data(ctx, k, kend - kstart)[pos - kstart:]
            if data:
                yield data
                pos += len(data)
            if pos < kend:
                yield from _zeros(kend - pos, chunk)
                pos = kend
    if pos < size:
        yield from _zeros(size - pos, chunk)


def _zeros(n: int, chunk: int) -> Iterator[bytes]:
    z = bytes(min(n, chunk))
    while n > 0:
        yield z if n >= len(z) else z[:n]
        n -= len(z)


# ---------------------------------------------------------------------- editing


def write_range(trans, writer: DataWriter, inode, visible, offset: int, data: bytes,
                inline_max: int, what: str) -> int:
    """Write `data` at byte `offset` of `inode` in its snapshot (copy-on-write).

    Updates inode.size; returns the change in the inode's data sectors."""
    store = trans.store
    writer.flush()   # reads below must see data this writer already placed
    inum, snap = inode.inum, inode.snapshot
    old_size = inode.size
    new_size = max(old_size, offset + len(data))
    block = writer.block
    has_inline = any(k.type == KeyType.inline_data
                     for k in visible_extents(trans, inum, visible, 0, 1))
    if new_size <= inline_max or has_inline:
        # small files are rewritten whole: inline, or converted to extents
        content = bytearray(read_range(store, inum, visible, 0, old_size, what, trans))
        content.extend(b"\0" * max(0, new_size - len(content)))
        content[offset:offset + len(data)] = data
        if new_size <= inline_max:
            keys = [inline_key(inum, snap, bytes(content))] if new_size else []
        else:
            keys = data_keys(inum, snap, 0, writer.write(content))
        inode.size = new_size
        return replace_range(trans, inum, snap, 0, END_OF_FILE, keys, visible)
    b0 = offset // block * block
    b1 = round_up(offset + len(data), block)
    head = read_range(store, inum, visible, b0, offset - b0, what, trans)
    tail_end = min(b1, old_size)
    tail = read_range(store, inum, visible, offset + len(data), tail_end - offset - len(data),
                      what, trans)
    buf = head + bytes(data) + tail
    keys = data_keys(inum, snap, b0 // SECTOR, writer.write(buf))
    inode.size = new_size
    end = b0 // SECTOR + sum(k.size for k in keys)
    return replace_range(trans, inum, snap, b0 // SECTOR, end, keys, visible)


def truncate_range(trans, writer: DataWriter, inode, visible, new_size: int, inline_max: int,
                   what: str) -> int:
    """Set the size; data past it is dropped (the partial last block zero-filled)."""
    inum, snap = inode.inum, inode.snapshot
    old_size = inode.size
    inode.size = new_size
    writer.flush()
    if new_size >= old_size:
        return 0
    store = trans.store
    block = writer.block
    has_inline = any(k.type == KeyType.inline_data
                     for k in visible_extents(trans, inum, visible, 0, 1))
    if has_inline or new_size <= inline_max:
        content = read_range(store, inum, visible, 0, new_size, what, trans)
        keys = [inline_key(inum, snap, content)] if new_size else []
        if new_size > inline_max:
            keys = data_keys(inum, snap, 0, writer.write(content))
        return replace_range(trans, inum, snap, 0, END_OF_FILE, keys, visible)
    b0 = new_size // block * block
    keys = []
    if new_size > b0:
        part = read_range(store, inum, visible, b0, new_size - b0, what, trans)
        keys = data_keys(inum, snap, b0 // SECTOR, writer.write(part))
    return replace_range(trans, inum, snap, b0 // SECTOR, END_OF_FILE, keys, visible)


def drop_all(trans, inode, visible) -> int:
    """Remove every data key of the file in its snapshot (unlink of the last link)."""
    return replace_range(trans, inode.inum, inode.snapshot, 0, END_OF_FILE, [], visible)
