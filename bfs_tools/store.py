"""The store: an open bfs image — device, superblock, btrees, journal, allocator.

    store = Store.open("disk.img", write=True)
    t = store.transaction(); ...; t.commit()
    store.close()          # commit point + clean shutdown

Crash model. A writable open starts an *epoch*: the superblock is marked
unclean and a range of journal seqs is reserved in it. Transactions journal
their keys (entries written without a device flush) and update btree nodes in
memory; dirty nodes may be written at any time, but never over a node the last
commit references (only appends to its tail, or copy-on-write elsewhere), and
space freed in the epoch is not reused before it ends. `commit()` writes what a
replay could not rebuild (new and restructured nodes, unjournalled updates),
then a flush journal entry with every root: that is the commit point.
`close()` writes every dirty node, commits, and marks the superblock clean.

After a crash, opening finds the newest flush entry, replays from its last_seq,
and blacklists every seq after it up to the reservation, so btree bsets written
by the unfinished epoch are ignored: the image is exactly as of the last commit.
"""

from __future__ import annotations

from .alloc.allocator import Allocator
from .btree.tree import Btrees
from .errors import (
    CorruptionError,
    DeviceError,
    FormatError,
    ReadOnlyError,
    UnsupportedFeatureError,
)
from .formats.constants import JOURNAL_SEQ_RESERVATION, SECTOR_SIZE
from .formats.fsck_errors import BY_NAME as ERR
from .formats.ids import (
    BtreeId,
    FeatureCompat,
    FeatureIncompat,
    FeatureRoCompat,
    JsetEntryType,
    SbFlags,
)
from .io.device import Device, FileDevice
from .journal.blacklist import Blacklist
from .journal.reader import JournalScan, plan_replay, scan_journal
from .journal.writer import Journal, JournalOwner
from .keys import Key, decode_keys, load_all_key_types, validate_key
from .superblock import (
    CleanState,
    ReadResult,
    RootEntry,
    Superblock,
    read_superblock,
    write_superblock,
)
from .trans import Transaction

KNOWN_INCOMPAT = int(FeatureIncompat.reflink | FeatureIncompat.inline_data
                     | FeatureIncompat.snapshots)
KNOWN_RO_COMPAT = int(FeatureRoCompat.alloc_info)
KNOWN_COMPAT = int(FeatureCompat.fsck_error_counts)

# a set lookup, where `x in iter(BtreeId)` walks every member
_BTREE_IDS = frozenset(BtreeId)
DIRTY_NODES_LIMIT = 1024


def check_features(sb: Superblock, write: bool) -> None:
    unknown = sb.features_incompat & ~KNOWN_INCOMPAT
    if unknown:
        raise UnsupportedFeatureError(
            f"image uses incompatible features unknown to this version (bits 0x{unknown:x}); "
            "it cannot be opened safely — upgrade bfs-tools")
    unknown = sb.features_ro_compat & ~KNOWN_RO_COMPAT
    if unknown and write:
        raise UnsupportedFeatureError(
            f"image uses read-only-compatible features unknown to this version (bits "
            f"0x{unknown:x}); it can be read but not written — upgrade bfs-tools")


class Store(JournalOwner):
    def __init__(self, dev: Device, sb: Superblock, *, read_only: bool,
                 sb_report: ReadResult | None = None):
        load_all_key_types()
        self.dev = dev
        self.sb = sb
        self.read_only = read_only
        self.sb_report = sb_report
        self.blacklist = Blacklist(sb.blacklist)
        self.btrees = Btrees(dev, node_size=sb.btree_node_size, block_size=sb.block_size,
                             magic64=sb.magic64(), csum_type=sb.csum_type,
                             is_blacklisted=self.blacklist.__contains__)
        self.journal: Journal | None = None
        self.allocator: Allocator | None = None
        self.journal_scan: JournalScan | None = None
        self.journal_problems: list[str] = []
        self.replayed_keys = 0
        self.open_problems: list[tuple[str, str]] = []   # lenient opens: (error name, message)
        self.was_clean = sb.is_clean
        self.closed = False
        self._writing = False
        self._opened_nodes_written = 0
        self.owns_device = False
        self.cache: dict = {}   # per-open caches of upper layers (snapshot table, ...)

    # ------------------------------------------------------------------ open

    @classmethod
    def open(cls, target, *, write: bool = False, strict_journal: bool = True,
             lenient: bool = False) -> Store:
        """Open an image (path or Device). Recovers from an unclean shutdown.

        strict_journal=False (check) records journal damage instead of failing.
        lenient=True (check) also tolerates damaged btree roots and keys: each
        problem is recorded in `open_problems` and an unreadable root is replaced
        by an empty one, so the check can go on and report everything.
        """
        dev = target if isinstance(target, Device) else FileDevice(target, write=write)
        try:
            rr = read_superblock(dev)
            check_features(rr.sb, write)
            store = cls(dev, rr.sb, read_only=not write, sb_report=rr)
            store.owns_device = not isinstance(target, Device)
            store.btrees.lenient = lenient
            store._check_geometry()
            store._load(strict_journal)
            return store
        except BaseException:
            if not isinstance(target, Device):
                dev.close()
            raise

    def _check_geometry(self) -> None:
        sb = self.sb
        need = sb.nbuckets * sb.bucket_size
        if self.dev.size < need:
            raise CorruptionError(
                f"{self.dev.name}: image is truncated: {self.dev.size} bytes, the filesystem "
                f"needs {need}", ERR["sb_field_bad"].id)
        ring = sb.journal_buckets
        if not ring or len(set(ring)) != len(ring) or any(
                not sb.first_bucket <= b < sb.nbuckets for b in ring):
            raise CorruptionError(f"{self.dev.name}: invalid journal bucket list",
                                  ERR["sb_journal_buckets_bad"].id)

    def _load(self, strict_journal: bool) -> None:
        sb = self.sb
        ring = sb.journal_buckets
        if sb.is_clean:
            c = sb.clean
            roots = [(r.btree_id, r.level, _root_key(r)) for r in c.roots]
            start_seq = max(c.journal_seq, sb.journal_seq_reserved) + 1
            next_idx, needed_from, flushed = c.journal_next, c.journal_seq + 1, c.journal_seq
            wps = ((c.btree_wp_bucket, c.btree_wp_used), (c.data_wp_bucket, c.data_wp_used))
            plan = None
        else:
            scan = self.journal_scan = scan_journal(
                self.dev, buckets=ring, bucket_size=sb.bucket_size, block_size=sb.block_size,
                magic64=sb.magic64(), csum_type=sb.csum_type)
            self.journal_problems += scan.damaged
            base = sb.clean.journal_seq if sb.clean else 0
            plan = plan_replay(scan, base_seq=base, reserved=sb.journal_seq_reserved,
                               blacklist=self.blacklist)
            for err_id, msg in plan.problems:   # damage no crash can cause
                if strict_journal:
                    raise CorruptionError(f"{self.dev.name}: {msg}; run bfs check", err_id)
                self.journal_problems.append(msg)
            if plan.missing:
                msg = (f"journal entries missing for seqs {plan.missing[0]}.."
                       f"{plan.missing[-1]} ({len(plan.missing)} entries)")
                if strict_journal:
                    raise CorruptionError(f"{self.dev.name}: {msg}; run bfs check",
                                          ERR["journal_entries_missing"].id)
                self.journal_problems.append(msg)
            if plan.flush is None:
                if sb.clean is None:
                    raise CorruptionError(f"{self.dev.name}: no clean state and no valid journal "
                                          "flush entry: cannot find the btree roots",
                                          ERR["btree_root_bad"].id)
                roots = [(r.btree_id, r.level, _root_key(r)) for r in sb.clean.roots]
                needed_from, flushed = base + 1, base
            else:
                roots = plan.roots
                needed_from, flushed = plan.flush.last_seq, plan.flush.seq
            if plan.new_blacklist:
                self.blacklist.add(*plan.new_blacklist)
            start_seq = max(scan.max_seq, sb.journal_seq_reserved, base,
                            plan.new_blacklist[1] if plan.new_blacklist else 0) + 1
            lo, hi, last_idx, _end = scan.bucket_ranges(len(ring))
            next_idx = last_idx + 1
            wps = ((0, 0), (0, 0))
        self._set_roots(roots)
        self.journal = Journal(self.dev, buckets=ring, bucket_size=sb.bucket_size,
                               block_size=sb.block_size, magic64=sb.magic64(),
                               csum_type=sb.csum_type, owner=self, seq=start_seq,
                               next_idx=next_idx, needed_from=needed_from, flushed_seq=flushed)
        if plan is not None:
            self.journal.bucket_lo, self.journal.bucket_hi = lo, hi
        self.allocator = Allocator(self, btree_wp=wps[0], data_wp=wps[1])
        self.btrees.space = self.allocator
        if not self.read_only:
            sb.flags &= ~SbFlags.clean
            sb.journal_seq_reserved = start_seq + JOURNAL_SEQ_RESERVATION
            sb.blacklist = list(self.blacklist.ranges)
            write_superblock(self.dev, sb)
        if plan is not None and plan.entries:
            self._replay(plan, strict_journal)
        if not self.read_only and not self.was_clean and not self.btrees.lenient:
            # make the recovered state durable, so the whole journal ring is free again
            # (a check, lenient, does it when it ends: writing needs allocations, and
            # it trusts no alloc info before its alloc pass)
            self.write_all()
            self.commit()
        self._opened_nodes_written = 0

    def _set_roots(self, roots: list[tuple[int, int, Key]]) -> None:
        seen = set()
        for btree_id, level, key in roots:
            if btree_id not in _BTREE_IDS or btree_id in seen:
                continue
            seen.add(btree_id)
            try:
                # read when first used, except by check (lenient), which reads
                # every btree and records a damaged root as a finding here
                self.btrees.set_root(btree_id, level, key, lazy=not self.btrees.lenient)
            except CorruptionError as e:
                if not self.btrees.lenient:
                    raise
                self.open_problems.append(("btree_root_bad", str(e)))
                self.btrees.new_empty_root(btree_id)
        missing = [b.name for b in BtreeId if b not in seen]
        if missing:
            msg = f"{self.dev.name}: no root for btrees {', '.join(missing)}"
            if not self.btrees.lenient:
                raise CorruptionError(msg, ERR["btree_root_bad"].id)
            self.open_problems.append(("btree_root_bad", msg))
            for b in BtreeId:
                if b not in seen:
                    self.btrees.new_empty_root(b)

    def _replay(self, plan, strict: bool) -> None:
        apply = self.btrees.apply
        for jset in plan.entries:
            for e in jset.entries:
                if e.type != JsetEntryType.btree_keys:
                    continue
                if e.btree_id not in _BTREE_IDS:
                    raise CorruptionError(f"journal seq {jset.seq}: keys for unknown btree "
                                          f"{e.btree_id}", ERR["journal_key_bad"].id)
                for k in e.keys():
                    if k.type != 0:
                        problem = validate_key(e.btree_id, k)
                        if problem:
                            msg = f"journal seq {jset.seq}: bad key: {problem}"
                            if strict:
                                raise CorruptionError(msg, ERR["journal_key_bad"].id)
                            self.journal_problems.append(msg)
                            continue
                    apply(e.btree_id, k, jset.seq, True)
                    self.replayed_keys += 1
        if not self.read_only:
            self.btrees.flush_moves()

    # ------------------------------------------------------------------ create

    @classmethod
    def create(cls, dev: Device, sb: Superblock) -> Store:
        """A store for a freshly formatted device: empty btrees, empty journal."""
        store = cls(dev, sb, read_only=False)
        for b in BtreeId:
            store.btrees.new_empty_root(b)
        store.journal = Journal(dev, buckets=sb.journal_buckets, bucket_size=sb.bucket_size,
                                block_size=sb.block_size, magic64=sb.magic64(),
                                csum_type=sb.csum_type, owner=store, seq=1, next_idx=0,
                                needed_from=1, flushed_seq=0)
        store.allocator = Allocator(store)
        store.btrees.space = store.allocator
        store.was_clean = False   # nothing valid on the device until close()
        return store

    # ------------------------------------------------------------------ JournalOwner

    def journal_min_pin(self) -> int:
        return self.btrees.min_pin()

    def journal_reclaim(self) -> None:
        self.journal_reserve(self.journal.seq)
        self.btrees.write_dirty(self.journal.seq, flush_moves=False)

    def journal_reserve(self, seq: int) -> None:
        if seq > self.sb.journal_seq_reserved:
            self.sb.journal_seq_reserved = seq + JOURNAL_SEQ_RESERVATION
            write_superblock(self.dev, self.sb)

    def journal_capacity(self) -> int:
        return len(self.sb.journal_buckets) * self.sb.bucket_size

    # ------------------------------------------------------------------ use

    def transaction(self) -> Transaction:
        if self.read_only:
            raise ReadOnlyError(f"{self.dev.name}: opened read-only")
        if self.closed:
            raise FormatError("store is closed")
        return Transaction(self)

    def after_transaction(self) -> None:
        if not self._writing and len(self.btrees.dirty) > DIRTY_NODES_LIMIT:
            self.write_all()

    def write_all(self) -> None:
        """Write every dirty btree node (not a commit point)."""
        if self._writing:
            return
        self._writing = True
        try:
            for _ in range(16):
                self.btrees.flush_moves()
                if not self.btrees.has_dirty():
                    return
                self.journal_reserve(self.journal.seq)
                self.btrees.write_dirty(self.journal.seq)
            raise FormatError("btree writes did not converge (internal error)")
        finally:
            self._writing = False

    def prepare_unjournalled(self) -> None:
        """Called before a transaction's updates go to btree nodes without the
        journal (Transaction.commit with journal=False).

        Fix (lost unjournalled updates): replay applies journalled keys over
        the btree nodes, so a journalled update older than an unjournalled
        update of the same position came back after a crash (K=1 journalled,
        K=2 unjournalled, commit, crash: K read 1). Writing every dirty node
        and forgetting the open journal entry (whose updates those nodes now
        hold) puts the next flush entry's last_seq after every older key.
        Node moves stay queued (applied after the transaction, as usual)."""
        j = self.journal
        if not self.btrees.has_dirty() and not j.entries:
            return
        self.journal_reserve(j.seq)
        self.btrees.write_dirty(j.seq, flush_moves=False)
        j.drop_open_entry()

    def root_entries(self) -> list[tuple[int, int, Key]]:
        out = []
        for btree_id in sorted(self.btrees.roots):
            key = self.btrees.root_ptr_key(btree_id)
            if key is None:
                raise FormatError(f"root of {BtreeId(btree_id).name} not written (internal error)")
            out.append((btree_id, self.btrees.root_level(btree_id), key))
        return out

    def commit(self) -> None:
        """The commit point: everything done so far survives a crash from now on."""
        if self.read_only:
            raise ReadOnlyError(f"{self.dev.name}: opened read-only")
        bt = self.btrees
        self._writing = True
        try:
            for _ in range(16):
                bt.flush_moves()
                self.journal_reserve(self.journal.seq)
                bt.write_dirty(self.journal.seq, only_required=True)
                need = self.journal.flush_entry_size(len(bt.roots))
                if self.journal.ensure_room(need, may_reclaim=False, flush=True) \
                        and not bt.moves:
                    # Fix (journal deadlock, see Journal.room): a flush entry
                    # that would keep more than half of the ring needed waits
                    # for the dirty nodes to be written (its last_seq is then
                    # its own seq), so the next flush entry always finds room.
                    if self.journal.flush_span(need) <= max(1, len(self.journal.buckets) // 2):
                        break
                self.journal_reclaim()
            else:
                raise FormatError("commit did not converge (internal error)")
            self.journal.write_entry(flush=True, roots=self.root_entries())
            bt.fresh.clear()   # the nodes written so far are committed now
        finally:
            self._writing = False
        for bucket in self.allocator.on_commit():
            self.dev.discard(bucket * self.sb.bucket_size, self.sb.bucket_size)

    def close(self) -> None:
        """Commit, write everything, mark the superblock clean, release the device."""
        if self.closed:
            return
        try:
            if not self.read_only:
                self.write_all()
                self.commit()
                sb = self.sb
                (bwp, bused), (dwp, dused) = self.allocator.write_points()
                sb.clean = CleanState(
                    journal_seq=self.journal.flushed_seq,
                    journal_next=(self.journal.idx + 1) % len(sb.journal_buckets),
                    btree_wp_bucket=bwp, btree_wp_used=bused,
                    data_wp_bucket=dwp, data_wp_used=dused,
                    roots=[RootEntry(b, level, _key_bytes(k)) for b, level, k in self.root_entries()])
                sb.flags |= SbFlags.clean
                sb.blacklist = list(self.blacklist.ranges)
                write_superblock(self.dev, sb)
        finally:
            self.closed = True
            if self.owns_device:
                self.dev.close()

    def abort(self) -> None:
        """Release the device without committing: the image stays as of the last commit."""
        if self.closed:
            return
        self.closed = True
        try:
            if not self.read_only and self.was_clean and self.btrees_written() == 0 \
                    and self.journal.writes == 0:
                # nothing of this epoch reached the btrees or the journal: still clean
                self.sb.flags |= SbFlags.clean
                write_superblock(self.dev, self.sb)
        except DeviceError:
            pass
        finally:
            if self.owns_device:
                self.dev.close()

    def btrees_written(self) -> int:
        return self.btrees.nodes_written

    def __enter__(self) -> Store:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    # ------------------------------------------------------------------ helpers

    @property
    def bucket_sectors(self) -> int:
        return self.sb.bucket_size // SECTOR_SIZE


def _root_key(r: RootEntry) -> Key:
    keys = decode_keys(r.key, what="superblock root entry")
    if len(keys) != 1:
        raise CorruptionError("superblock root entry without exactly one key",
                              ERR["btree_root_bad"].id)
    return keys[0]


def _key_bytes(k: Key) -> bytes:
    from .keys import encode_key

    return encode_key(k)
