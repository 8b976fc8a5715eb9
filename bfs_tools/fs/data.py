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

from ..checksum import checksum
from ..errors import ChecksumError, CorruptionError
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


class ReadContext:
    """What a read needs besides the key: the store, the name for error
    messages (the path), and the last region read (a region split over several
    keys is read and verified once)."""

    __slots__ = ("store", "what", "cache_sector", "cache_data")

    def __init__(self, store, what: str):
        self.store = store
        self.what = what
        self.cache_sector = -1
        self.cache_data = b""


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
