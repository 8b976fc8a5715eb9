"""Writing the journal: the open entry, the ring of buckets, flush entries, reclaim.

Transactions add their keys to the open entry (seq `self.seq`). The entry is
written when it is full (without a device flush) or as a flush entry, which is
the commit point of the image: preflush, write with the flush flag and every
btree root, flush again. After a crash, replay starts from the newest flush entry.

What must not be overwritten in the ring:
  * the entries the last flush entry needs for replay: [needed_from, flushed_seq];
  * entries written since, from the oldest seq still pinned by a dirty btree node
    or by the transaction being committed: they are what the next flush entry
    will need. (Entries after the last flush are dropped by replay after a crash,
    so nothing else protects them.)
When the next bucket is still needed, the store writes its dirty nodes
(`journal_reclaim`), which unpins everything journalled so far.
"""

from __future__ import annotations

import time

from ..codec import record
from ..errors import FormatError
from ..formats.ids import JsetEntryType, JsetFlags
from ..keys import HEADER_SIZE, Key
from .entries import Datetime, EntryHeader, JsetHeader, encode_jset, entry, keys_entry, root_entry

_PTR_VALUE_SIZE = record("BtreePtrValue").SIZE


class JournalOwner:
    """What the journal needs from the store."""

    def journal_min_pin(self) -> int:
        """Oldest seq whose keys are only in the journal (0: none)."""
        raise NotImplementedError

    def journal_reclaim(self) -> None:
        """Write dirty btree nodes (journalling nothing) so older entries are not needed."""
        raise NotImplementedError

    def journal_reserve(self, seq: int) -> None:
        """Make sure seqs up to `seq` are reserved in the superblock."""
        raise NotImplementedError


class Journal:
    def __init__(self, dev, *, buckets: list[int], bucket_size: int, block_size: int,
                 magic64: int, csum_type: int, owner: JournalOwner, seq: int,
                 next_idx: int, needed_from: int, flushed_seq: int):
        self.dev = dev
        self.buckets = buckets
        self.bucket_size = bucket_size
        self.block_size = block_size
        self.magic64 = magic64
        self.csum_type = csum_type
        self.owner = owner
        self.seq = seq                      # seq of the open (unwritten) entry
        self.entries: list[bytes] = []
        self.size = JsetHeader.SIZE
        self.max_size = min(bucket_size, 1 << 20) // 2
        self.idx = next_idx % len(buckets)  # ring index of the bucket being written
        self.offset = 0                     # byte offset of the next entry in it
        self.bucket_lo = [0] * len(buckets)  # lowest / highest seq written in each bucket
        self.bucket_hi = [0] * len(buckets)
        self.needed_from = needed_from      # last_seq of the last flush entry
        self.flushed_seq = flushed_seq      # seq of the last flush entry
        self.trans_start = 0                # first seq of the commit in progress (0: none)
        self.writes = 0
        self.bytes_written = 0

    # ------------------------------------------------------------------ adding

    def add_keys(self, btree_id: int, keys: list[Key]) -> None:
        """Journal `keys` for `btree_id`, splitting across entries as needed."""
        batch: list[Key] = []
        batch_size = 0
        room = self.max_size - self.size - EntryHeader.SIZE
        for k in keys:
            ksize = HEADER_SIZE + len(k.val)
            if batch_size + ksize > room and (batch or self.entries):
                if batch:
                    self._add(keys_entry(btree_id, batch))
                    batch, batch_size = [], 0
                self.write_entry()
                room = self.max_size - self.size - EntryHeader.SIZE
            batch.append(k)
            batch_size += ksize
        if batch:
            self._add(keys_entry(btree_id, batch))

    def add_log(self, text: str) -> None:
        self._add(entry(JsetEntryType.log, text.encode("utf-8", "replace")[:4096]))

    def _add(self, raw: bytes) -> None:
        if self.size + len(raw) > self.max_size and self.entries:
            self.write_entry()
        self.entries.append(raw)
        self.size += len(raw)

    # ------------------------------------------------------------------ space

    def min_needed(self) -> int:
        """Oldest seq that the next flush entry may need (entries from it on)."""
        candidates = [self.seq]
        pin = self.owner.journal_min_pin()
        if pin:
            candidates.append(pin)
        if self.trans_start:
            candidates.append(self.trans_start)
        return min(candidates)

    def _in_flush_range(self, idx: int) -> bool:
        """Does ring bucket `idx` hold entries the last flush entry replays?"""
        lo, hi = self.bucket_lo[idx], self.bucket_hi[idx]
        return hi != 0 and lo <= self.flushed_seq and hi >= self.needed_from

    def _reclaimable(self, idx: int) -> bool:
        if self.bucket_hi[idx] == 0:
            return True
        if self._in_flush_range(idx):
            return False  # holds entries the last flush entry replays
        return self.bucket_hi[idx] < self.min_needed()

    # Fix (journal deadlock): only a flush entry moves `needed_from` forward,
    # so the ring must always keep a bucket where the next flush entry can go.
    #  * Non-flush entries never move into the last bucket before the ones the
    #    last flush entry needs (`_is_reserve`); transactions that do not fit
    #    in the room left (`room`) are applied unjournalled instead.
    #  * A commit whose flush entry would keep more than half of the ring
    #    needed (`flush_span`) first writes the dirty btree nodes, so its
    #    last_seq is its own seq (Store.commit).
    # Before, a run of small commits with a leaf pinned by an old seq filled
    # the ring with flush entries that all needed that seq: the next commit
    # found no room and "did not converge".

    def _is_reserve(self, idx: int) -> bool:
        """Is `idx` the bucket kept free for the next flush entry?"""
        return self._in_flush_range((idx + 1) % len(self.buckets))

    def room(self) -> int:
        """Bytes of keys (each key at most max_size // 2) that non-flush entries
        can still take before the next flush entry, at worst.

        A written entry that was not the last holds more than max_size // 2
        bytes (it was written because the next key did not fit) and takes at
        most a bucket; so each usable free bucket ahead takes at least
        max_size // 2 bytes, whatever the padding and bucket tails. The open
        entry is written first."""
        n = len(self.buckets)
        if not any(self._in_flush_range(i) for i in range(n)):
            return 1 << 62   # nothing pinned by a flush entry: the ring cycles freely
        usable = 0
        idx = self.idx
        for _ in range(n - 1):
            idx = (idx + 1) % n
            if self._in_flush_range(idx) or self._is_reserve(idx):
                break
            usable += 1
        return max(0, usable * (self.max_size // 2 - EntryHeader.SIZE - JsetHeader.SIZE)
                   - self.size)

    def flush_span(self, length: int) -> int:
        """Ring buckets holding entries a flush entry of `length` bytes, written
        now, would need for replay (its own bucket included)."""
        n = len(self.buckets)
        target = self.idx if self.fits(length) else self._next_idx()
        last_seq = min(self.min_needed(), self.seq)
        return 1 + sum(1 for i in range(n) if i != target and self.bucket_hi[i]
                       and self.bucket_hi[i] >= last_seq)

    def _next_idx(self) -> int:
        return (self.idx + 1) % len(self.buckets)

    def fits(self, length: int) -> bool:
        return self.offset + length <= self.bucket_size

    def ensure_room(self, length: int, *, may_reclaim: bool = True, flush: bool = False) -> bool:
        """Make room for an entry of `length` bytes. False when only a reclaim
        (forbidden by the caller) would free it. Only a flush entry may use
        the bucket kept for the next flush entry."""
        if self.fits(length):
            return True
        nxt = self._next_idx()
        if not flush and self._is_reserve(nxt):
            raise FormatError("journal full: the last bucket is kept for the next commit "
                              "(internal error: the transaction should have gone unjournalled)")
        if not self._reclaimable(nxt):
            if not may_reclaim:
                return False
            self.owner.journal_reclaim()
            if not self._reclaimable(nxt):
                raise FormatError("journal full: entries still needed for replay fill the ring")
        self.idx = nxt
        self.offset = 0
        self.bucket_lo[nxt] = self.bucket_hi[nxt] = 0
        return True

    def flush_entry_size(self, nroots: int) -> int:
        """Upper bound of the padded size of the open entry written as a flush entry."""
        # fix: a btree_ptr value is PtrValue.SIZE (44) bytes, not 40: the bound
        # could fall a block short, failing the commit ("no room for a flush entry")
        roots = nroots * (EntryHeader.SIZE + HEADER_SIZE + _PTR_VALUE_SIZE)
        raw = self.size + roots + EntryHeader.SIZE + Datetime.SIZE
        return raw + (-raw % self.block_size)

    # ------------------------------------------------------------------ writing

    def drop_open_entry(self) -> None:
        """Forget the open entry's contents (its seq stays open). Only for a
        caller that has just written every dirty btree node, so the updates
        it holds are in the nodes the next commit references
        (Store.prepare_unjournalled)."""
        self.entries = []
        self.size = JsetHeader.SIZE

    def write_entry(self, *, flush: bool = False,
                    roots: list[tuple[int, int, Key]] | None = None) -> int:
        """Write the open entry; with flush, as a commit point. Returns its seq.

        A flush entry's caller must have made room (ensure_room) first: a reclaim
        here would move btree nodes after the roots were taken.
        """
        seq = self.seq
        self.owner.journal_reserve(seq)
        entries = self.entries
        last_seq = self.min_needed()
        if flush:
            entries = entries + [root_entry(b, level, ptr) for b, level, ptr in roots or []]
            entries.append(entry(JsetEntryType.datetime, Datetime(time.time_ns()).pack()))
            # the flush entry's own keys are in it: replay from it at the latest
            last_seq = min(last_seq, seq)
        raw = encode_jset(seq, last_seq, JsetFlags.flush if flush else 0, entries,
                          self.magic64, self.csum_type, self.block_size)
        if len(raw) > self.bucket_size:
            raise FormatError(f"journal entry of {len(raw)} bytes exceeds a journal bucket")
        if not self.ensure_room(len(raw), may_reclaim=not flush, flush=flush):
            raise FormatError("journal: no room for a flush entry (internal error)")
        where = self.buckets[self.idx] * self.bucket_size + self.offset
        if flush:
            self.dev.flush()
        self.dev.write(where, raw)
        if flush:
            self.dev.flush()
            self.needed_from = last_seq
            self.flushed_seq = seq
        self.offset += len(raw)
        if not self.bucket_lo[self.idx]:
            self.bucket_lo[self.idx] = seq
        self.bucket_hi[self.idx] = seq
        self.writes += 1
        self.bytes_written += len(raw)
        self.entries = []
        self.size = JsetHeader.SIZE
        self.seq = seq + 1
        return seq
