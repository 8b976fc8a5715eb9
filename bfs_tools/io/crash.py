"""Crash states: what a device may hold after a crash, rebuilt from a write log.

A `RecordingDevice` logs every write (`WriteOp`) and flush (`FlushOp`) a run
issued. This module turns the device the run started from (a `MemoryDevice`)
plus that log into the device images a crash could have left behind, for crash
consistency tests (CrashMonkey, dm-log-writes, SQLite's crash VFS).

The device model:
  * A flush makes every write issued before it durable. Writes issued since the
    last flush (the *pending* writes) are in the device's volatile cache: each
    either reached the medium or not, in any order (a device may reorder writes
    between flushes; order matters only where writes overlap).
  * A write that was reaching the medium when power failed may be *torn*: one
    of its 512-byte sectors is garbled (random bytes) or left as it was
    (old contents), the others hold the new data.
  * Discards are not logged: a discarded range keeps its old contents, which
    the format must tolerate anyway.

Log positions. The log is `log[0..n)`. A crash *point* p means `log[:p]` was
issued. `durable(p)` is the index just past the last FlushOp before p (0 when
there is none): `log[:durable]` is on the medium for sure; the writes in
`log[durable:p]` are pending. An *epoch* is the run of writes between two
flushes; a crash inside an epoch is described by the epoch's flush prefix plus
a subset of its writes (crash points inside an epoch are subsets too: the
writes issued so far, in order), so this module enumerates crash states epoch
by epoch:

  flush-prefix  the state after the writes before each flush (and the end of
                the log): every write of earlier epochs, none of this one;
  prefix        the first j pending writes, in issue order (crash mid-epoch;
                all of them only at the end of a log that ends unflushed);
  drop          every pending write but one;
  subset        a seeded random subset, applied in a seeded random order;
  torn          the first j pending writes, the j-th torn in one sector
                (first, last or a random one; garbled or left old).

Variants per epoch are bounded by `CrashLimits` and chosen with a seeded RNG,
so a run is reproducible; identical device images are produced once (by
content digest). Every `CrashState` says exactly how its image was built, and
`build_state` rebuilds one from its description (to replay a failure).

Everything here is a pure function of (base, log, parameters): the base device
is never modified (states are clones of it with writes applied).
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from .device import FlushOp, MemoryDevice, WriteOp

SECTOR = 512

Op = WriteOp | FlushOp


# ---------------------------------------------------------------------------
# descriptions


@dataclass(frozen=True)
class Torn:
    """Write `index` of the log reached the medium except sector `sector`
    (0-based, 512 bytes, relative to the write's start), which is either
    `garbled` (random bytes from `fill_seed`) or left `old`."""

    index: int
    sector: int
    mode: str               # "garbled" | "old"
    fill_seed: int = 0


@dataclass(frozen=True)
class CrashState:
    """One crash state: how to build it, and the resulting image.

    point:    the crash happened just before log[point] was issued.
    durable:  log[:durable] is on the medium (durable <= point; log[durable-1]
              is a FlushOp unless durable == 0).
    applied:  log indices of the pending writes (in [durable, point)) that
              reached the medium, in the order they were applied. A torn write
              is listed here too, last.
    torn:     the torn write, if any.
    kind:     which family of variants produced it (see the module docstring).
    epoch:    index of the epoch (the k-th run of writes between flushes).
    digest:   content digest of the image (sha256 over its non-zero chunks).
    """

    point: int
    durable: int
    applied: tuple[int, ...]
    torn: Torn | None
    kind: str
    epoch: int
    digest: bytes = field(repr=False, default=b"")

    def reached(self, index: int) -> bool:
        """Did write `index` reach the medium (at least partly, if torn)?"""
        return index < self.durable or index in self.applied

    def complete(self, index: int) -> bool:
        """Did write `index` reach the medium whole (not torn)?

        A torn write may still hold exactly its new bytes (a sector left old
        that already held the new data): compare bytes where that matters
        (`write_intact`)."""
        return self.reached(index) and (self.torn is None or self.torn.index != index)

    def describe(self) -> str:
        pend = self.point - self.durable
        s = (f"{self.kind} epoch {self.epoch}: crash before op {self.point}, durable "
             f"{self.durable}, {len(self.applied)}/{pend} pending ops applied")
        if self.applied and len(self.applied) <= 12:
            s += f" {list(self.applied)}"
        if self.torn is not None:
            s += f", op {self.torn.index} torn at sector {self.torn.sector} ({self.torn.mode})"
        return s


@dataclass(frozen=True)
class CrashLimits:
    """How many variants of each kind to produce per epoch (pending writes)."""

    prefixes: int = 4       # in-order prefixes (besides none and all)
    drops: int = 2          # all pending writes but one
    subsets: int = 4        # random subsets in random order
    torn: int = 2           # torn writes
    max_states: int | None = None   # stop after this many distinct states


@dataclass(frozen=True)
class Epoch:
    """Writes between two flushes: log[start:end] holds the epoch's ops; the
    FlushOp that closes it is log[end] (end == len(log): the log ended first)."""

    index: int
    start: int
    end: int
    writes: tuple[int, ...]


# ---------------------------------------------------------------------------
# log structure


def flush_indices(log: Sequence[Op]) -> list[int]:
    """Indices of the FlushOps of the log."""
    return [i for i, op in enumerate(log) if isinstance(op, FlushOp)]


def durable_index(log: Sequence[Op], point: int) -> int:
    """Index just past the last FlushOp before `point` (0: none)."""
    for i in range(min(point, len(log)) - 1, -1, -1):
        if isinstance(log[i], FlushOp):
            return i + 1
    return 0


def epochs(log: Sequence[Op]) -> list[Epoch]:
    """The epochs of the log, in order (empty ones included)."""
    out: list[Epoch] = []
    start = 0
    writes: list[int] = []
    for i, op in enumerate(log):
        if isinstance(op, FlushOp):
            out.append(Epoch(len(out), start, i, tuple(writes)))
            start, writes = i + 1, []
        else:
            writes.append(i)
    out.append(Epoch(len(out), start, len(log), tuple(writes)))
    return out


def write_intact(dev: MemoryDevice, op: WriteOp, length: int | None = None) -> bool:
    """Does `dev` hold exactly the bytes of write `op` (its first `length`
    bytes: e.g. a structure without its padding)?"""
    n = len(op.data) if length is None else min(length, len(op.data))
    return dev.read(op.offset, n) == op.data[:n]


# ---------------------------------------------------------------------------
# building images


def apply_write(dev: MemoryDevice, op: WriteOp, torn: Torn | None = None) -> None:
    """Apply one write to `dev` (in place), torn as described."""
    if torn is None:
        dev.write(op.offset, op.data)
        return
    lo = torn.sector * SECTOR
    hi = min(lo + SECTOR, len(op.data))
    if torn.mode == "old":
        keep = dev.read(op.offset + lo, hi - lo) if hi > lo else b""
    else:
        keep = random.Random(torn.fill_seed).randbytes(hi - lo)
    dev.write(op.offset, op.data)
    if hi > lo:
        dev.write(op.offset + lo, keep)


def build_state(base: MemoryDevice, log: Sequence[Op], *, durable: int,
                applied: Sequence[int] = (), torn: Torn | None = None) -> MemoryDevice:
    """The image of a crash state: a clone of `base` with the writes of
    log[:durable] applied in order, then the writes `applied` in that order
    (the one named by `torn` torn)."""
    dev = base.clone()
    for op in log[:durable]:
        if isinstance(op, WriteOp):
            dev.write(op.offset, op.data)
    for i in applied:
        op = log[i]
        if not isinstance(op, WriteOp):
            raise ValueError(f"log[{i}] is not a write")
        apply_write(dev, op, torn if torn is not None and torn.index == i else None)
    return dev


def rebuild(base: MemoryDevice, log: Sequence[Op], state: CrashState) -> MemoryDevice:
    """Rebuild the image of `state` (e.g. to investigate a failure)."""
    return build_state(base, log, durable=state.durable, applied=state.applied,
                       torn=state.torn)


_ZERO_CHUNK_DIGEST: dict[int, bytes] = {}


def _chunk_digest(chunk: bytes | bytearray) -> bytes:
    return hashlib.blake2b(chunk, digest_size=16).digest()


def _zero_digest(size: int) -> bytes:
    d = _ZERO_CHUNK_DIGEST.get(size)
    if d is None:
        d = _ZERO_CHUNK_DIGEST[size] = _chunk_digest(bytes(size))
    return d


class _Durable:
    """The durable image as the log is walked forward, with cached per-chunk
    digests so the digest of an image (or of the image plus an overlay of a
    few chunks) costs only the chunks that changed."""

    def __init__(self, base: MemoryDevice):
        self.dev = base.clone()
        self.chunk = self.dev.CHUNK
        self.digests: dict[int, bytes] = {}
        self.stale: set[int] = set(self.dev.chunks)

    def write(self, op: WriteOp) -> None:
        self.dev.write(op.offset, op.data)
        self.stale.update(self.chunks_of(op.offset, len(op.data)))

    def chunks_of(self, offset: int, length: int) -> range:
        if length <= 0:
            return range(0)
        return range(offset // self.chunk, (offset + length - 1) // self.chunk + 1)

    def _refresh(self) -> None:
        zero = _zero_digest(self.chunk)
        for idx in self.stale:
            c = self.dev.chunks.get(idx)
            d = _chunk_digest(c) if c is not None else zero
            if d == zero:
                self.digests.pop(idx, None)
            else:
                self.digests[idx] = d
        self.stale.clear()

    def digest(self, overlay: dict[int, bytearray] | None = None) -> bytes:
        self._refresh()
        digests = self.digests
        if overlay:
            digests = dict(digests)
            zero = _zero_digest(self.chunk)
            for idx, c in overlay.items():
                d = _chunk_digest(c)
                if d == zero:
                    digests.pop(idx, None)
                else:
                    digests[idx] = d
        h = hashlib.sha256()
        for idx in sorted(digests):
            h.update(idx.to_bytes(8, "little"))
            h.update(digests[idx])
        return h.digest()

    def overlay(self, log: Sequence[Op], applied: Sequence[int],
                torn: Torn | None) -> dict[int, bytearray]:
        """The chunks the pending writes `applied` change, as new chunk copies."""
        touched: set[int] = set()
        for i in applied:
            op = log[i]
            touched.update(self.chunks_of(op.offset, len(op.data)))
        # a small device over just the touched chunks
        scratch = MemoryDevice(self.dev.size, name=self.dev.name)
        for idx in touched:
            c = self.dev.chunks.get(idx)
            scratch.chunks[idx] = bytearray(c) if c is not None else bytearray(self.chunk)
        for i in applied:
            apply_write(scratch, log[i], torn if torn is not None and torn.index == i else None)
        return scratch.chunks

    def materialise(self, overlay: dict[int, bytearray] | None) -> MemoryDevice:
        dev = self.dev.clone()
        if overlay:
            for idx, c in overlay.items():
                dev.chunks[idx] = bytearray(c)
        return dev


def _variants(ep: Epoch, log: Sequence[Op], rng: random.Random,
              limits: CrashLimits) -> Iterator[tuple[str, tuple[int, ...], Torn | None]]:
    """(kind, applied writes, torn) for the pending writes of one epoch."""
    w = ep.writes
    n = len(w)
    if n == 0:
        return
    # in-order prefixes: a crash after the j-th write of the epoch completed
    inner = list(range(1, n))
    if len(inner) > limits.prefixes:
        inner = sorted(rng.sample(inner, limits.prefixes))
    for j in inner:
        yield "prefix", w[:j], None
    if ep.end == len(log):
        # all of them, and the log ended before a flush (when a flush closes
        # the epoch, this is the next epoch's flush prefix)
        yield "prefix", w, None
    # every pending write but one
    if n > 1:
        drops = list(range(n)) if n <= limits.drops else rng.sample(range(n), limits.drops)
        for d in drops:
            yield "drop", w[:d] + w[d + 1:], None
    # random subsets, random order
    if n > 1:
        for _ in range(limits.subsets):
            k = rng.randrange(1, n + 1)
            pick = rng.sample(w, k)
            yield "subset", tuple(pick), None
    # torn writes: the writes before the j-th in issue order, the j-th torn
    for _ in range(limits.torn):
        j = rng.randrange(n)
        op = log[w[j]]
        nsec = max(1, -(-len(op.data) // SECTOR))
        sector = rng.choice(sorted({0, nsec - 1, rng.randrange(nsec)}))
        mode = rng.choice(("garbled", "old"))
        torn = Torn(w[j], sector, mode, rng.randrange(1 << 32))
        yield "torn", w[:j + 1], torn


def crash_states(base: MemoryDevice, log: Sequence[Op], *, seed: int = 0,
                 limits: CrashLimits = CrashLimits(),
                 select: Callable[[Epoch], bool] | None = None,
                 ) -> Iterator[tuple[CrashState, MemoryDevice]]:
    """Every distinct crash state of the run `log` recorded over `base`.

    Yields (state, image) in log order: for each epoch, its flush prefix, then
    (for the epochs `select` accepts, default all) the bounded variants of its
    pending writes. Each image is a fresh MemoryDevice owned by the caller.
    Identical images are yielded once (the first description wins).
    """
    rng = random.Random(seed)
    seen: set[bytes] = set()
    produced = 0
    cur = _Durable(base)
    for ep in epochs(log):
        durable = ep.start
        # the flush prefix: nothing of this epoch reached the medium
        variants: list[tuple[str, tuple[int, ...], Torn | None]] = [("flush-prefix", (), None)]
        if select is None or select(ep):
            variants += list(_variants(ep, log, rng, limits))
        point = ep.end
        for kind, applied, torn in variants:
            overlay = cur.overlay(log, applied, torn) if applied else None
            digest = cur.digest(overlay)
            if digest in seen:
                continue
            seen.add(digest)
            state = CrashState(point=point if applied or kind != "flush-prefix" else ep.start,
                               durable=durable, applied=applied, torn=torn, kind=kind,
                               epoch=ep.index, digest=digest)
            yield state, cur.materialise(overlay)
            produced += 1
            if limits.max_states is not None and produced >= limits.max_states:
                return
        for i in ep.writes:
            cur.write(log[i])
    # the end of the log: everything issued reached the medium (the last flush
    # prefix already covers a log that ends with a flush)
    digest = cur.digest()
    if digest not in seen:
        last = epochs(log)[-1]
        yield (CrashState(point=len(log), durable=durable_index(log, len(log)),
                          applied=last.writes, torn=None, kind="end", epoch=last.index,
                          digest=digest), cur.materialise(None))


def flush_prefix_states(base: MemoryDevice, log: Sequence[Op]
                        ) -> Iterator[tuple[CrashState, MemoryDevice]]:
    """Only the flush prefixes (and the end of the log), deduplicated."""
    return crash_states(base, log, select=lambda ep: False)
