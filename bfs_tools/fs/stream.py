"""Reading one whole file as a verified stream of bytes (`bfs cat`).

The file's visible data keys become, in file order, pieces: zeros for holes,
inline bytes, slices of checksummed regions on the device. Regions that follow
each other on the device are grouped into runs of up to RUN bytes. A run is
mapped once (Device.map; one pread when the device cannot map) and each of its
regions is checksummed on that view, once, without copying.

Large files verify their runs on worker threads, a few runs ahead of the run
being written out: crc32c and xxhash release the GIL, and the stream's own
thread only plans runs and writes out verified views, so it mostly waits and the
checksums get every core. Measured on 1 GiB in 4,096 extents, 2 cores: the
checksums take ~124 ms of CPU on mapped pages (page faults included); split
between two threads ~65 ms. Before, the stream's thread checksummed a share of
every run itself and handed out each 256 KiB extent as its own piece: the
worker then waited for the GIL behind that per-extent Python (~150 ms).

Errors keep their place: a region whose checksum does not match, or whose
pointer is bad, fails when the stream reaches it, after every good byte before
it has been handed out.
"""

from __future__ import annotations

import os
from collections import namedtuple
from collections.abc import Iterator

from ..checksum import checksum
from ..codec import field_unpacker
from ..errors import BfsError, ChecksumError
from ..extents import ExtentValue, decode_extent
from ..formats.ids import KeyType
from .data import SECTOR, ReadContext, check_region, key_data, visible_extents

RUN = 16 << 20              # bytes of device regions mapped and verified together
PARALLEL_MIN = 8 << 20      # files smaller than this verify on the stream's thread
MAX_WORKERS = 4             # beyond ~4 threads memory bandwidth is the limit
ZERO_CHUNK = 4 << 20        # holes are handed out in pieces of at most this
EXTENT, INLINE = KeyType.extent, KeyType.inline_data


# A checksummed region on the device, as the stream verifies it (once, however
# many keys use it). check_region takes it like an Extent.
Region = namedtuple("Region", "sector region_sectors csum_type csum")

# Planning is the stream thread's share of the work, taken from the checksums'
# time: the fields a read needs are unpacked without making an Extent.
_read_fields = field_unpacker("ExtentValue", "sector", "csum_type", "region_sectors", "offset",
                              "csum")


class _Run:
    """Regions that lie back to back on the device (sectors lo..hi), and the
    pieces of the file in order up to the next run. Pieces are tuples:
    ("region", Region, start, end, file_offset): bytes [start, end) of the run's view;
    ("bytes", data) / ("zeros", n) / ("error", exception raised when reached)."""

    __slots__ = ("lo", "hi", "regions", "pieces", "held")

    def __init__(self):
        self.lo = self.hi = 0
        self.regions: dict[Region, None] = {}     # in device order
        self.pieces: list[tuple] = []
        self.held = 0           # bytes of "bytes" pieces (shared data is read while planning)


def _plan(ctx: ReadContext, keys: Iterator, size: int) -> Iterator[_Run]:
    """The runs of the file's bytes [0, size), in order."""
    limit = RUN // SECTOR
    value_size = ExtentValue.SIZE
    run = _Run()
    pos = 0
    for k in keys:
        kstart = (k.pos[1] - k.size) * SECTOR
        if kstart >= size:
            break
        if kstart > pos:
            run.pieces.append(("zeros", kstart - pos))
            pos = kstart
        kend = min(k.pos[1] * SECTOR, size)
        t = k.type
        if t == EXTENT:
            try:
                if len(k.val) != value_size:
                    decode_extent(k.val)            # raises the format error
                sector, csum_type, region_sectors, offset, csum = _read_fields(k.val)
                r = Region(sector, region_sectors, csum_type, csum)
                check_region(ctx, r, kstart)
            except BfsError as err:
                run.pieces.append(("error", err))
                pos = kend
                continue
            # in this run: inside it already (a split extent), or right after it
            r_end = sector + region_sectors
            if run.regions and not (run.lo <= sector and r_end <= run.hi) and not (
                    sector == run.hi and r_end - run.lo <= max(limit, region_sectors)):
                yield run
                run = _Run()
            if not run.regions:
                run.lo = run.hi = sector
            if r not in run.regions:
                run.regions[r] = None
                if r_end > run.hi:
                    run.hi = r_end
            start = (sector - run.lo + offset) * SECTOR + (pos - kstart)
            # a key may claim more sectors than its region holds: zeros after it
            end = min(start + kend - pos, (r_end - run.lo) * SECTOR)
            if end > start:
                run.pieces.append(("region", r, start, end, pos))
                pos += end - start
        elif t == INLINE:
            # the value, then zeros (a key may claim far more than it holds)
            data = k.val[pos - kstart:kend - kstart]
            if data:
                run.pieces.append(("bytes", data))
                pos += len(data)
        else:
            # shared (reflink_p) or lost (error) data, read key by key
            try:
                data = key_data(ctx, k, kend - kstart)[pos - kstart:]
            except BfsError as err:
                run.pieces.append(("error", err))
                pos = kend
                continue
            if data:
                run.pieces.append(("bytes", data))
                run.held += len(data)
                pos += len(data)
        if pos < kend:
            run.pieces.append(("zeros", kend - pos))
            pos = kend
        if run.held >= RUN:     # bounds the memory of a file of shared data
            yield run
            run = _Run()
    if pos < size:
        run.pieces.append(("zeros", size - pos))
    yield run


def _verify(dev, run: _Run):
    """(view of the run's device range, {Region: error or None} for the regions
    that fail):
    runs on a worker thread for large files."""
    if not run.regions:
        return memoryview(b""), {}
    offset, length = run.lo * SECTOR, (run.hi - run.lo) * SECTOR
    view = dev.map(offset, length)
    if view is None:
        view = memoryview(dev.read(offset, length))
    bad = {}
    lo = run.lo
    for r in run.regions:
        a = (r.sector - lo) * SECTOR
        try:
            if checksum(r.csum_type, view[a:a + r.region_sectors * SECTOR]) != r.csum:
                bad[r] = None
        except BfsError as err:     # an unknown checksum type
            bad[r] = err
    return view, bad


def _pieces(ctx: ReadContext, run: _Run, view, bad: dict) -> Iterator:
    """The run's pieces as bytes-like objects; region slices that follow each
    other in the view are handed out as one (one write instead of 64 for a
    16 MiB run of 256 KiB extents)."""
    lo = hi = 0                 # a pending slice [lo, hi) of the view
    for p in run.pieces:
        kind = p[0]
        if kind == "region":
            _, r, start, end, file_offset = p
            if r in bad:
                if hi > lo:
                    yield view[lo:hi]
                err = bad[r]
                if err is None:
                    err = ChecksumError(f"{ctx.what}: data checksum mismatch at file offset "
                                        f"{file_offset} (device sector {r.sector})")
                raise err
            if start == hi and hi > lo:
                hi = end
                continue
            if hi > lo:
                yield view[lo:hi]
            lo, hi = start, end
            continue
        if hi > lo:
            yield view[lo:hi]
            lo = hi = 0
        if kind == "bytes":
            yield p[1]
        elif kind == "zeros":
            yield from _zeros(p[1])
        else:
            raise p[1]
    if hi > lo:
        yield view[lo:hi]


def _zeros(n: int) -> Iterator[bytes]:
    z = bytes(min(n, ZERO_CHUNK))
    while n > 0:
        yield z if n >= len(z) else z[:n]
        n -= len(z)


def iter_read(store, inum: int, visible, size: int, what: str) -> Iterator:
    """The file's bytes [0, size) as a stream of bytes-like pieces (bytes or
    memoryviews of mapped runs): every region verified once, holes as zeros in
    pieces of at most ZERO_CHUNK bytes (a key or a hole may claim terabytes:
    nothing is built whole)."""
    ctx = ReadContext(store, what)
    dev = store.dev
    runs = _plan(ctx, visible_extents(store.btrees, inum, visible, 0, -(-size // SECTOR)), size)
    workers = min(MAX_WORKERS, os.cpu_count() or 1)
    if size < PARALLEL_MIN or workers < 2:
        for run in runs:
            yield from _pieces(ctx, run, *_verify(dev, run))
        return
    from collections import deque

    # Runs verified ahead: one per worker plus the one being written out, so
    # the workers never wait for the writer. Each is a mapping of up to RUN
    # bytes, unmapped once its pieces have been written and dropped.
    pool = _Workers(workers, _verify)
    ahead: deque = deque()
    try:
        for run in runs:
            ahead.append((run, pool.submit(dev, run)))
            if len(ahead) > workers:
                run0, result = ahead.popleft()
                yield from _pieces(ctx, run0, *_wait(result))
        while ahead:
            run0, result = ahead.popleft()
            yield from _pieces(ctx, run0, *_wait(result))
    finally:
        pool.close()        # also after an error or a consumer that stopped early


class _Workers:
    """Threads that run fn(*args) for submitted tasks, each result delivered
    to the queue submit returned. (concurrent.futures does the same, but
    importing it pulls in logging and traceback: ~10 ms of a cat's start-up.)"""

    def __init__(self, n: int, fn):
        import threading
        from queue import SimpleQueue

        self._queue = SimpleQueue
        self.tasks = SimpleQueue()
        self.stopped = False
        self.threads = [threading.Thread(target=self._loop, args=(fn,), daemon=True,
                                         name=f"bfs-verify-{i}") for i in range(n)]
        for t in self.threads:
            t.start()

    def _loop(self, fn) -> None:
        while (task := self.tasks.get()) is not None:
            args, out = task
            if self.stopped:            # closing: skip what is still queued
                out.put((None, None))
                continue
            try:
                out.put((fn(*args), None))
            except BaseException as e:  # noqa: BLE001 - raised in the stream's thread
                out.put((None, e))

    def submit(self, *args):
        out = self._queue()
        self.tasks.put((args, out))
        return out

    def close(self) -> None:
        self.stopped = True
        for _ in self.threads:
            self.tasks.put(None)
        for t in self.threads:
            t.join()


def _wait(result) -> tuple:
    value, err = result.get()
    if err is not None:
        raise err
    return value
