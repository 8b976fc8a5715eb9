"""Reading the journal: scan the ring, pick the replay range, report damage.

Used by recovery on an unclean open, by `dump journal` and by `check`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import CorruptionError
from ..formats.fsck_errors import BY_NAME as ERR
from ..formats.ids import JsetEntryType
from ..keys import Key, decode_keys
from .blacklist import Blacklist
from .entries import Jset, try_decode_jset


@dataclass
class JournalScan:
    jsets: list[Jset] = field(default_factory=list)       # every valid entry found
    damaged: list[str] = field(default_factory=list)      # entries with valid magic but bad
    max_seq: int = 0                                      # highest seq seen (valid ones)

    def bucket_ranges(self, nbuckets: int) -> tuple[list[int], list[int], int, int]:
        """Per ring bucket (lowest, highest) seq; plus the index and end offset of
        the bucket holding the highest seq."""
        lo = [0] * nbuckets
        hi = [0] * nbuckets
        last_idx, last_end, best = 0, 0, -1
        for j in self.jsets:
            i = j.ring_idx
            lo[i] = j.seq if not lo[i] else min(lo[i], j.seq)
            hi[i] = max(hi[i], j.seq)
            if j.seq > best:
                best, last_idx, last_end = j.seq, i, j.offset + j.length
        return lo, hi, last_idx, last_end


def scan_journal(dev, *, buckets: list[int], bucket_size: int, block_size: int, magic64: int,
                 csum_type: int) -> JournalScan:
    scan = JournalScan()
    for idx, bucket in enumerate(buckets):
        start = bucket * bucket_size
        if start + bucket_size > dev.size:
            scan.damaged.append(f"journal bucket {bucket} lies beyond the device")
            continue
        buf = dev.read(start, bucket_size)
        offset = 0
        while offset + block_size <= bucket_size:
            jset, reason = try_decode_jset(buf, offset, magic64, csum_type)
            if jset is None:
                if reason:
                    scan.damaged.append(f"journal bucket {bucket}: {reason}")
                offset += block_size
                continue
            jset.ring_idx = idx
            scan.jsets.append(jset)
            scan.max_seq = max(scan.max_seq, jset.seq)
            # entries start on block boundaries: the next one is after the padding
            offset += jset.length + (-jset.length % block_size)
    scan.jsets.sort(key=lambda j: (j.seq, j.ring_idx, j.offset))
    return scan


@dataclass
class ReplayPlan:
    flush: Jset | None                       # newest usable flush entry (None: use clean state)
    entries: list[Jset]                      # to replay, in seq order
    roots: list[tuple[int, int, Key]]        # from the flush entry
    missing: list[int]                       # seqs absent from the replay range
    new_blacklist: tuple[int, int] | None    # seqs to blacklist now


def plan_replay(scan: JournalScan, *, base_seq: int, reserved: int,
                blacklist: Blacklist) -> ReplayPlan:
    """Choose what to replay after an unclean shutdown.

    base_seq: the journal seq of the clean state in the superblock (entries up
    to it are already in the btree nodes). reserved: the highest seq that may
    have been handed out (superblock reservation).
    """
    usable = [j for j in scan.jsets if j.seq not in blacklist]
    flushes = [j for j in usable if j.is_flush and j.seq > base_seq]
    flush = max(flushes, key=lambda j: j.seq) if flushes else None
    top = flush.seq if flush is not None else base_seq
    entries: list[Jset] = []
    missing: list[int] = []
    roots: list[tuple[int, int, Key]] = []
    if flush is not None:
        by_seq: dict[int, Jset] = {}
        for j in usable:
            if flush.last_seq <= j.seq <= flush.seq and j.seq not in by_seq:
                by_seq[j.seq] = j
        for seq in range(flush.last_seq, flush.seq + 1):
            if seq in by_seq:
                entries.append(by_seq[seq])
            elif seq not in blacklist and seq > base_seq:
                missing.append(seq)
        for e in flush.entries:
            if e.type == JsetEntryType.btree_root:
                keys = decode_keys(e.payload, what="journal btree_root entry")
                if len(keys) != 1:
                    raise CorruptionError("journal btree_root entry without exactly one key",
                                          ERR["journal_key_bad"].id)
                roots.append((e.btree_id, e.level, keys[0]))
    high = max(reserved, scan.max_seq)
    new_bl = (top + 1, high) if high > top else None
    return ReplayPlan(flush, entries, roots, missing, new_bl)
