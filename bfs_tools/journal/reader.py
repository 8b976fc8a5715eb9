"""Reading the journal: scan the ring, pick the replay range, report damage.

Used by recovery on an unclean open, by `dump journal` and by `check`.
"""

from __future__ import annotations

from ..errors import CorruptionError
from ..formats.fsck_errors import BY_NAME as ERR
from ..formats.ids import JsetEntryType, JsetFlags
from ..keys import Key, decode_keys
from .blacklist import Blacklist
from .entries import Jset, JsetHeader, try_decode_jset


class JournalScan:
    __slots__ = ("jsets", "damaged", "max_seq", "nbuckets", "damaged_headers")

    def __init__(self, nbuckets: int = 0):
        self.jsets: list[Jset] = []           # every valid entry found
        self.damaged: list[str] = []          # entries with valid magic but bad
        self.max_seq = 0                      # highest seq seen (valid ones)
        self.nbuckets = nbuckets              # ring buckets scanned
        # (seq, flags) from the header of each damaged entry whose header was readable
        self.damaged_headers: list[tuple[int, int]] = []

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
    scan = JournalScan(nbuckets=len(buckets))
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
                    h = JsetHeader.unpack(buf, offset)
                    scan.damaged_headers.append((h.seq, h.flags))
                offset += block_size
                continue
            jset.ring_idx = idx
            scan.jsets.append(jset)
            scan.max_seq = max(scan.max_seq, jset.seq)
            # entries start on block boundaries: the next one is after the padding
            offset += jset.length + (-jset.length % block_size)
    scan.jsets.sort(key=lambda j: (j.seq, j.ring_idx, j.offset))
    return scan


class ReplayPlan:
    __slots__ = ("flush", "entries", "roots", "missing", "new_blacklist", "problems")

    def __init__(self, flush: Jset | None, entries: list[Jset], roots: list[tuple[int, int, Key]],
                 missing: list[int], new_blacklist: tuple[int, int] | None,
                 problems: list[tuple[int, str]]):
        self.flush = flush                  # newest usable flush entry (None: use clean state)
        self.entries = entries              # to replay, in seq order
        self.roots = roots                  # from the flush entry
        self.missing = missing              # seqs absent from the replay range
        self.new_blacklist = new_blacklist  # seqs to blacklist now
        # damage that is not a crash's (a torn write cannot produce it): (fsck error id, message)
        self.problems = problems


# more entries than any journal ring can hold (JOURNAL_BYTES_MAX / 512-byte blocks)
MAX_REPLAY_SPAN = 1 << 17


def plan_replay(scan: JournalScan, *, base_seq: int, reserved: int,
                blacklist: Blacklist) -> ReplayPlan:
    """Choose what to replay after an unclean shutdown.

    base_seq: the journal seq of the clean state in the superblock (entries up
    to it are already in the btree nodes). reserved: the highest seq that may
    have been handed out (superblock reservation).
    """
    problems: list[tuple[int, str]] = []
    backwards = ERR["journal_seq_backwards"].id
    usable = []
    for j in scan.jsets:
        if j.seq in blacklist:
            continue
        if j.seq > reserved and j.seq > base_seq:
            # Fix (an entry with a seq beyond the superblock's reservation made
            # the next seq overflow): the writer reserves every seq before use
            problems.append((backwards, f"journal entry seq {j.seq} is beyond the reserved "
                                        f"seqs (up to {reserved})"))
            continue
        if j.is_flush and j.seq > base_seq and not any(
                e.type == JsetEntryType.btree_root for e in j.entries):
            # Fix (a flush entry without roots emptied every btree): every flush
            # entry records all roots; the previous commit point is used
            problems.append((ERR["journal_entries_missing"].id,
                             f"journal flush entry seq {j.seq} has no btree roots: its commit "
                             "is lost (missing)"))
            continue
        if j.last_seq > j.seq and j.seq > base_seq:
            # Fix (seq going backwards went unnoticed): checksummed, so not torn
            problems.append((backwards, f"journal entry seq {j.seq}: last_seq {j.last_seq} is "
                                        "after its own seq"))
            continue
        if usable and usable[-1].seq == j.seq and j.seq > base_seq and (
                usable[-1].last_seq, usable[-1].flags, usable[-1].entries) != (
                j.last_seq, j.flags, j.entries):
            problems.append((backwards, f"journal seq {j.seq} written twice with different "
                                        "contents (seqs are never reused)"))
            continue
        usable.append(j)
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
        if flush.seq - flush.last_seq >= MAX_REPLAY_SPAN:
            # Fix (a flush entry whose last_seq is garbage made replay list every
            # seq in between: unbounded time and memory): no ring holds that many
            problems.append((backwards, f"journal flush entry seq {flush.seq}: last_seq "
                                        f"{flush.last_seq} is further back than any journal "
                                        "reaches"))
            entries = [by_seq[s] for s in sorted(by_seq)]
        else:
            for seq in range(flush.last_seq, flush.seq + 1):
                if seq in by_seq:
                    entries.append(by_seq[seq])
                elif seq not in blacklist and seq > base_seq:
                    missing.append(seq)
        # Fix (seq going backwards went unnoticed): the entries to replay were
        # written one after the other around the ring, and the ring never
        # wraps over entries still needed; so their places, from the first
        # one's bucket on, must increase with their seqs. Otherwise seqs were
        # rewritten and replay would apply updates in the wrong order.
        n = scan.nbuckets
        if n and entries:
            first = entries[0].ring_idx

            def place(j: Jset) -> tuple[int, int]:
                return ((j.ring_idx - first) % n, j.offset)

            for a, b in zip(entries, entries[1:], strict=False):
                if place(b) <= place(a):
                    problems.append((backwards, (
                        f"journal seq {b.seq} (bucket index {b.ring_idx} +{b.offset}) lies "
                        f"before seq {a.seq} (bucket index {a.ring_idx} +{a.offset}) in the "
                        "ring")))
                    break
        for e in flush.entries:
            if e.type == JsetEntryType.btree_root:
                keys = decode_keys(e.payload, what="journal btree_root entry")
                if len(keys) != 1:
                    raise CorruptionError("journal btree_root entry without exactly one key",
                                          ERR["journal_key_bad"].id)
                roots.append((e.btree_id, e.level, keys[0]))
    # Fix (a damaged commit point was silently skipped): a flush entry that a
    # crash tore is the last thing written before the crash; if an entry with
    # a higher seq is intact, this flush entry was durable and its commit is
    # lost, not rolled back.
    for seq, flags in scan.damaged_headers:
        if (flags & JsetFlags.flush and seq > top and seq not in blacklist
                and any(j.seq > seq for j in usable)):
            problems.append((ERR["journal_entries_missing"].id, (
                f"journal flush entry seq {seq} is damaged but newer entries exist: a "
                "commit point is lost")))
    high = max(reserved, max((j.seq for j in usable), default=0))
    scan.max_seq = min(scan.max_seq, high)
    new_bl = (top + 1, high) if high > top else None
    return ReplayPlan(flush, entries, roots, missing, new_bl, problems)
