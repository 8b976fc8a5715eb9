"""Superblock: encode/decode one copy, find the newest valid copy, write all copies.

Layout on the device (see formats/superblock.py): a layout record at byte 3584,
the primary copy at 4096, a second copy right after it, and a backup at the
start of the last bucket. Every copy carries the same seq; the newest copy with
a valid checksum wins, and the reader reports any copy it had to skip.
"""

from __future__ import annotations

import time

from .checksum import checksum
from .codec import record
from .errors import FormatError, NotBfsError
from .formats.constants import (
    BLOCK_SIZE_MAX,
    BLOCK_SIZE_MIN,
    BTREE_NODE_SIZE_MAX,
    BTREE_NODE_SIZE_MIN,
    BUCKET_SIZE_MAX,
    BUCKET_SIZE_MIN,
    FORMAT_VERSION,
    FORMAT_VERSION_MIN,
    LAYOUT_MAGIC,
    LAYOUT_OFFSET,
    MAX_SUPERBLOCKS,
    SB_MAGIC,
    SB_MAX_SIZE,
    SB_OFFSET,
    SECTOR_SIZE,
)
from .formats.ids import ChecksumType, SbFieldType, SbFlags
from .io.device import Device

SbHeader = record("SuperblockHeader")
LayoutRec = record("LayoutRecord")
FieldHeader = record("SbFieldHeader")
JournalFieldHead = record("SbJournalField")
CleanFieldHead = record("SbCleanField")
EntryHeader = record("JsetEntryHeader")
# The seq_blacklist and errors fields' record types (SbBlacklistField, SeqRange,
# SbErrorsField, SbErrorEntry) are looked up where those fields are met: most
# opens meet neither, and building a record type costs ~0.15 ms of start-up
# (codec.record builds each once).

LAYOUT_RECORD_SIZE = 512
_CSUM_TYPES = frozenset(ChecksumType)

# The classes below are plain classes, not dataclasses: importing dataclasses
# (with inspect, ast, dis and tokenize) cost every command ~20 ms of start-up
# (tests/unit/test_startup_imports.py keeps it off the open path). The
# CleanState and RootEntry reprs show their values: tests compare vars(sb).


class RootEntry:
    """A btree root as stored in the clean field / journal: level + btree_ptr key bytes."""

    __slots__ = ("btree_id", "level", "key")

    def __init__(self, btree_id: int, level: int, key: bytes):
        self.btree_id = btree_id
        self.level = level
        self.key = key

    def __repr__(self) -> str:
        return f"RootEntry(btree_id={self.btree_id!r}, level={self.level!r}, key={self.key!r})"


class CleanState:
    __slots__ = ("journal_seq", "journal_next", "btree_wp_bucket", "data_wp_bucket",
                 "btree_wp_used", "data_wp_used", "roots")

    def __init__(self, journal_seq: int, journal_next: int, btree_wp_bucket: int = 0,
                 data_wp_bucket: int = 0, btree_wp_used: int = 0, data_wp_used: int = 0,
                 roots: list[RootEntry] | None = None):
        self.journal_seq = journal_seq
        self.journal_next = journal_next
        self.btree_wp_bucket = btree_wp_bucket
        self.data_wp_bucket = data_wp_bucket
        self.btree_wp_used = btree_wp_used
        self.data_wp_used = data_wp_used
        self.roots = [] if roots is None else roots

    def __repr__(self) -> str:
        return (f"CleanState(journal_seq={self.journal_seq!r}, "
                f"journal_next={self.journal_next!r}, btree_wp_bucket={self.btree_wp_bucket!r}, "
                f"data_wp_bucket={self.data_wp_bucket!r}, btree_wp_used={self.btree_wp_used!r}, "
                f"data_wp_used={self.data_wp_used!r}, roots={self.roots!r})")


class Superblock:
    """One superblock, decoded. Header fields are attributes; fields are typed.
    (No __slots__: tests compare vars(sb) of two reads.)"""

    def __init__(self, *, version: int, version_min: int, csum_type: int, data_csum_type: int,
                 str_hash_type: int, uuid: bytes, user_uuid: bytes, label: bytes, seq: int,
                 created_ns: int, write_time_ns: int, block_size: int, bucket_size: int,
                 btree_node_size: int, extent_max: int, inline_data_max: int,
                 first_bucket: int, nbuckets: int, device_size: int, features_incompat: int,
                 features_ro_compat: int, features_compat: int, flags: int,
                 journal_seq_reserved: int, sb_max_size: int, offsets: list[int],
                 journal_buckets: list[int] | None = None, clean: CleanState | None = None,
                 blacklist: list[tuple[int, int]] | None = None,
                 errors: dict[int, tuple[int, int]] | None = None,
                 offset: int = SB_OFFSET):
        self.version = version
        self.version_min = version_min
        self.csum_type = csum_type
        self.data_csum_type = data_csum_type
        self.str_hash_type = str_hash_type
        self.uuid = uuid
        self.user_uuid = user_uuid
        self.label = label
        self.seq = seq
        self.created_ns = created_ns
        self.write_time_ns = write_time_ns
        self.block_size = block_size
        self.bucket_size = bucket_size
        self.btree_node_size = btree_node_size
        self.extent_max = extent_max
        self.inline_data_max = inline_data_max
        self.first_bucket = first_bucket
        self.nbuckets = nbuckets
        self.device_size = device_size
        self.features_incompat = features_incompat
        self.features_ro_compat = features_ro_compat
        self.features_compat = features_compat
        self.flags = flags
        self.journal_seq_reserved = journal_seq_reserved
        self.sb_max_size = sb_max_size
        self.offsets = offsets
        self.journal_buckets = [] if journal_buckets is None else journal_buckets
        self.clean = clean
        self.blacklist = [] if blacklist is None else blacklist
        self.errors = {} if errors is None else errors
        self.offset = offset  # where this copy was read from

    @property
    def label_str(self) -> str:
        return self.label.rstrip(b"\0").decode("utf-8", "replace")

    @property
    def bucket_sectors(self) -> int:
        return self.bucket_size // SECTOR_SIZE

    @property
    def is_clean(self) -> bool:
        return bool(self.flags & SbFlags.clean) and self.clean is not None

    def magic64(self) -> int:
        """The per-filesystem value XORed into node and journal magics."""
        return int.from_bytes(self.uuid[:8], "little")


def _pad8(n: int) -> int:
    return (n + 7) & ~7


def _encode_fields(sb: Superblock) -> bytes:
    out = bytearray()

    def add(ftype: int, payload: bytes) -> None:
        payload = payload + b"\0" * (_pad8(len(payload)) - len(payload))
        out.extend(FieldHeader(ftype, len(payload)).pack())
        out.extend(payload)

    add(SbFieldType.journal,
        JournalFieldHead(len(sb.journal_buckets)).pack()
        + b"".join(b.to_bytes(8, "little") for b in sb.journal_buckets))
    if sb.clean is not None:
        c = sb.clean
        entries = b"".join(
            EntryHeader(len(r.key), 1, r.btree_id, r.level).pack() + r.key for r in c.roots)
        add(SbFieldType.clean,
            CleanFieldHead(c.journal_seq, c.journal_next, c.btree_wp_bucket, c.data_wp_bucket,
                           c.btree_wp_used, c.data_wp_used).pack() + entries)
    if sb.blacklist:
        seq_range = record("SeqRange")
        add(SbFieldType.seq_blacklist,
            record("SbBlacklistField")(len(sb.blacklist)).pack()
            + b"".join(seq_range(s, e).pack() for s, e in sb.blacklist))
    if sb.errors:
        error_entry = record("SbErrorEntry")
        add(SbFieldType.errors,
            record("SbErrorsField")(len(sb.errors)).pack()
            + b"".join(error_entry(i, min(c, 0xFFFFFFFF), t).pack()
                       for i, (c, t) in sorted(sb.errors.items())))
    return bytes(out)


def encode(sb: Superblock, offset: int) -> bytes:
    """The bytes of the copy of `sb` that lives at byte `offset`."""
    fields = _encode_fields(sb)
    offsets = (sb.offsets + [0] * MAX_SUPERBLOCKS)[:MAX_SUPERBLOCKS]
    head = SbHeader(
        SB_MAGIC, 0, sb.version, sb.version_min, sb.csum_type, sb.data_csum_type,
        sb.str_hash_type, sb.uuid, sb.user_uuid, sb.label.ljust(32, b"\0")[:32], offset, sb.seq,
        sb.created_ns, sb.write_time_ns, sb.block_size, sb.bucket_size, sb.btree_node_size,
        sb.extent_max, sb.inline_data_max, sb.first_bucket, sb.nbuckets, sb.device_size,
        sb.features_incompat, sb.features_ro_compat, sb.features_compat, sb.flags,
        sb.journal_seq_reserved, len(sb.offsets), sb.sb_max_size, *offsets, len(fields), 0)
    raw = bytearray(head.pack() + fields)
    if len(raw) > sb.sb_max_size:
        raise FormatError(f"superblock of {len(raw)} bytes exceeds its {sb.sb_max_size}-byte slot")
    csum = checksum(sb.csum_type, bytes(raw[24:]))
    raw[16:24] = csum.to_bytes(8, "little")
    return bytes(raw)


def _is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def decode(buf: bytes, where: str = "superblock") -> Superblock:
    """Decode and validate one copy; FormatError/NotBfsError say what is wrong."""
    if len(buf) < SbHeader.SIZE:
        raise NotBfsError(f"{where}: too short for a superblock")
    h = SbHeader.unpack(buf)
    if h.magic != SB_MAGIC:
        raise NotBfsError(f"{where}: no bfs magic")
    if h.csum_type not in _CSUM_TYPES:
        raise FormatError(f"{where}: unknown checksum type {h.csum_type}")
    total = SbHeader.SIZE + h.fields_bytes
    if h.fields_bytes > SB_MAX_SIZE or total > len(buf):
        raise FormatError(f"{where}: fields length {h.fields_bytes} out of range")
    if checksum(h.csum_type, buf[24:total]) != h.csum:
        raise FormatError(f"{where}: bad checksum")
    if h.version < FORMAT_VERSION_MIN or h.version_min > FORMAT_VERSION:
        raise FormatError(f"{where}: format version {h.version} (min {h.version_min}) is not "
                          f"supported (this tool reads {FORMAT_VERSION_MIN}..{FORMAT_VERSION})")
    _validate_geometry(h, where)
    sb = Superblock(
        version=h.version, version_min=h.version_min, csum_type=h.csum_type,
        data_csum_type=h.data_csum_type, str_hash_type=h.str_hash_type, uuid=h.uuid,
        user_uuid=h.user_uuid, label=h.label.rstrip(b"\0"), seq=h.seq, created_ns=h.created_ns,
        write_time_ns=h.write_time_ns, block_size=h.block_size, bucket_size=h.bucket_size,
        btree_node_size=h.btree_node_size, extent_max=h.extent_max,
        inline_data_max=h.inline_data_max, first_bucket=h.first_bucket, nbuckets=h.nbuckets,
        device_size=h.device_size, features_incompat=h.features_incompat,
        features_ro_compat=h.features_ro_compat, features_compat=h.features_compat,
        flags=h.flags, journal_seq_reserved=h.journal_seq_reserved,
        sb_max_size=h.layout_sb_max_size,
        offsets=[h.layout_offsets_0, h.layout_offsets_1, h.layout_offsets_2,
                 h.layout_offsets_3][:h.layout_nr_superblocks],
        offset=h.offset)
    _decode_fields(sb, buf[SbHeader.SIZE:total], where)
    return sb


def _validate_geometry(h, where: str) -> None:
    def bad(msg: str):
        raise FormatError(f"{where}: {msg}")

    if not (_is_pow2(h.block_size) and BLOCK_SIZE_MIN <= h.block_size <= BLOCK_SIZE_MAX):
        bad(f"invalid block size {h.block_size}")
    if not (_is_pow2(h.bucket_size) and BUCKET_SIZE_MIN <= h.bucket_size <= BUCKET_SIZE_MAX
            and h.bucket_size >= h.block_size):
        bad(f"invalid bucket size {h.bucket_size}")
    if not (_is_pow2(h.btree_node_size) and BTREE_NODE_SIZE_MIN <= h.btree_node_size
            <= min(BTREE_NODE_SIZE_MAX, h.bucket_size) and h.btree_node_size >= h.block_size):
        bad(f"invalid btree node size {h.btree_node_size}")
    if not (h.block_size <= h.extent_max <= h.bucket_size and h.extent_max % h.block_size == 0):
        bad(f"invalid extent_max {h.extent_max}")
    if h.inline_data_max > h.btree_node_size // 8:
        bad(f"invalid inline_data_max {h.inline_data_max}")
    if h.nbuckets < 2 or h.first_bucket >= h.nbuckets or h.nbuckets * h.bucket_size > h.device_size:
        bad(f"invalid bucket count {h.nbuckets} (first {h.first_bucket})")
    if not (1 <= h.layout_nr_superblocks <= MAX_SUPERBLOCKS):
        bad(f"invalid number of superblock copies {h.layout_nr_superblocks}")
    if not (4096 <= h.layout_sb_max_size <= 1 << 20):
        bad(f"invalid superblock size {h.layout_sb_max_size}")


def _decode_fields(sb: Superblock, buf: bytes, where: str) -> None:
    pos = 0
    while pos < len(buf):
        if len(buf) - pos < FieldHeader.SIZE:
            raise FormatError(f"{where}: truncated field header")
        fh = FieldHeader.unpack(buf, pos)
        pos += FieldHeader.SIZE
        payload = buf[pos:pos + fh.bytes]
        if len(payload) != fh.bytes:
            raise FormatError(f"{where}: field {fh.type} overruns the superblock")
        pos += fh.bytes
        try:
            _decode_field(sb, fh.type, payload)
        except FormatError as e:
            raise FormatError(f"{where}: field {_field_name(fh.type)}: {e}") from None


def _field_name(t: int) -> str:
    try:
        return SbFieldType(t).name
    except ValueError:
        return str(t)


def _array(payload: bytes, head, elem_size: int):
    h = head.unpack(payload)
    need = head.SIZE + h.nr * elem_size
    if need > len(payload):
        raise FormatError(f"{h.nr} entries do not fit in {len(payload)} bytes")
    return h.nr, head.SIZE


def _decode_field(sb: Superblock, ftype: int, payload: bytes) -> None:
    if ftype == SbFieldType.journal:
        nr, off = _array(payload, JournalFieldHead, 8)
        sb.journal_buckets = [int.from_bytes(payload[off + 8 * i: off + 8 * i + 8], "little")
                              for i in range(nr)]
    elif ftype == SbFieldType.clean:
        h = CleanFieldHead.unpack(payload)
        clean = CleanState(h.journal_seq, h.journal_next, h.btree_wp_bucket, h.data_wp_bucket,
                           h.btree_wp_used, h.data_wp_used)
        pos = CleanFieldHead.SIZE
        while pos + EntryHeader.SIZE <= len(payload):
            eh = EntryHeader.unpack(payload, pos)
            if eh.bytes == 0 and eh.type == 0:
                break  # zero padding
            pos += EntryHeader.SIZE
            key = payload[pos:pos + eh.bytes]
            if len(key) != eh.bytes:
                raise FormatError("truncated root entry")
            pos += eh.bytes
            clean.roots.append(RootEntry(eh.btree_id, eh.level, key))
        sb.clean = clean
    elif ftype == SbFieldType.seq_blacklist:
        seq_range = record("SeqRange")
        nr, off = _array(payload, record("SbBlacklistField"), seq_range.SIZE)
        sb.blacklist = [tuple(seq_range.unpack(payload, off + i * seq_range.SIZE))
                        for i in range(nr)]
    elif ftype == SbFieldType.errors:
        error_entry = record("SbErrorEntry")
        nr, off = _array(payload, record("SbErrorsField"), error_entry.SIZE)
        for i in range(nr):
            e = error_entry.unpack(payload, off + i * error_entry.SIZE)
            sb.errors[e.id] = (e.count, e.last_ns)
    # unknown field types are skipped: fields are self-describing


class CopyReport:
    __slots__ = ("offset", "status", "seq")

    def __init__(self, offset: int, status: str, seq: int | None = None):
        self.offset = offset
        self.status = status    # "ok", "stale" (older seq) or the reason it was rejected
        self.seq = seq


class ReadResult:
    __slots__ = ("sb", "copies", "layout_problem")

    def __init__(self, sb: Superblock, copies: list[CopyReport],
                 layout_problem: str | None = None):
        self.sb = sb
        self.copies = copies
        self.layout_problem = layout_problem   # the copies' list of offsets was unusable

    @property
    def used_backup(self) -> bool:
        return self.sb.offset != SB_OFFSET

    def problems(self) -> list[CopyReport]:
        return [c for c in self.copies if c.status != "ok"]


def _read_copy(dev: Device, offset: int) -> bytes:
    length = min(SB_MAX_SIZE, dev.size - offset)
    if offset < 0 or length < SbHeader.SIZE:
        raise NotBfsError(f"superblock at byte {offset}: beyond the end of the device")
    head = dev.read(offset, SbHeader.SIZE)
    if head[:16] != SB_MAGIC:
        raise NotBfsError(f"superblock at byte {offset}: no bfs magic")
    fields = int.from_bytes(head[SbHeader.SIZE - 8:SbHeader.SIZE - 4], "little")
    total = min(length, SbHeader.SIZE + min(fields, SB_MAX_SIZE))
    return head + dev.read(offset + SbHeader.SIZE, total - SbHeader.SIZE)


def read_layout_record(dev: Device) -> list[int] | None:
    if dev.size < LAYOUT_OFFSET + LAYOUT_RECORD_SIZE:
        return None
    buf = dev.read(LAYOUT_OFFSET, LAYOUT_RECORD_SIZE)
    if buf[:16] != LAYOUT_MAGIC:
        return None
    rec = LayoutRec.unpack(buf)
    if checksum(ChecksumType.crc32c, buf[24:LayoutRec.SIZE]) != rec.csum:
        return None
    offsets = [rec.layout_offsets_0, rec.layout_offsets_1, rec.layout_offsets_2,
               rec.layout_offsets_3][:min(rec.layout_nr_superblocks, MAX_SUPERBLOCKS)]
    return [o for o in offsets if o]


def encode_layout_record(sb: Superblock) -> bytes:
    offsets = (sb.offsets + [0] * MAX_SUPERBLOCKS)[:MAX_SUPERBLOCKS]
    rec = bytearray(LayoutRec(LAYOUT_MAGIC, 0, FORMAT_VERSION, len(sb.offsets),
                              sb.sb_max_size, *offsets).pack())
    rec[16:24] = checksum(ChecksumType.crc32c, bytes(rec[24:])).to_bytes(8, "little")
    return bytes(rec).ljust(LAYOUT_RECORD_SIZE, b"\0")


def end_backup_candidates(dev_size: int) -> list[int]:
    """Where a backup copy can be: the start of the last bucket, for every bucket size."""
    out = []
    size = BUCKET_SIZE_MIN
    while size <= BUCKET_SIZE_MAX:
        if dev_size >= 2 * size:
            out.append((dev_size // size - 1) * size)
        size *= 2
    return out


def read_superblock(dev: Device) -> ReadResult:
    """Find the newest valid superblock copy. NotBfsError if there is none."""
    if dev.size < SB_OFFSET + SbHeader.SIZE:
        raise NotBfsError(f"{dev.name}: too small to hold a bfs filesystem ({dev.size} bytes)")
    reports: dict[int, CopyReport] = {}
    found: list[Superblock] = []

    def try_copy(offset: int) -> Superblock | None:
        if offset in reports:
            return None
        try:
            sb = decode(_read_copy(dev, offset), f"superblock at byte {offset}")
        except (FormatError, NotBfsError) as e:
            reports[offset] = CopyReport(offset, str(e).split(": ", 1)[-1])
            return None
        if sb.offset != offset:
            reports[offset] = CopyReport(offset, f"copy claims to live at byte {sb.offset}")
            return None
        reports[offset] = CopyReport(offset, "ok", sb.seq)
        found.append(sb)
        return sb

    primary = try_copy(SB_OFFSET)
    if primary is not None:
        for off in primary.offsets:
            try_copy(off)
        members = [s for s in found if s.uuid == primary.uuid]
    else:
        for off in (read_layout_record(dev) or []):
            try_copy(off)
        if not found:
            try_copy(SB_OFFSET + SB_MAX_SIZE)
            for off in end_backup_candidates(dev.size):
                if try_copy(off) is not None:
                    break
        if not found:
            reason = reports[SB_OFFSET].status
            if reason == "no bfs magic" and all(r.status in ("no bfs magic",)
                                                 or "beyond" in r.status
                                                 for r in reports.values()):
                raise NotBfsError(f"{dev.name}: not a bfs image (no superblock found)")
            raise NotBfsError(f"{dev.name}: no valid superblock (primary: {reason})")
        # use the layout of the best copy to visit the remaining copies
        best = max(found, key=lambda s: s.seq)
        for off in best.offsets:
            try_copy(off)
        members = [s for s in found if s.uuid == best.uuid]
    best = max(members, key=lambda s: s.seq)
    layout_problem = None
    if not _offsets_ok(best.offsets, dev.size):
        # Fix (a valid copy listing copies outside the device made every write of
        # the superblock fail): the layout is where format puts the copies
        canonical = [SB_OFFSET, SB_OFFSET + SB_MAX_SIZE, (best.nbuckets - 1) * best.bucket_size]
        layout_problem = f"copies listed at {best.offsets}, rebuilt as {canonical}"
        best.offsets = canonical
        for off in canonical:
            if try_copy(off) is not None and found[-1].uuid == best.uuid:
                members.append(found[-1])
    for s in members:
        if s.seq < best.seq:
            reports[s.offset].status = "stale"
    expected = set(best.offsets)
    copies = [reports[o] if o in reports else CopyReport(o, "not read") for o in sorted(expected)]
    return ReadResult(best, copies, layout_problem)


def _offsets_ok(offsets: list[int], dev_size: int) -> bool:
    """The primary at SB_OFFSET, every copy distinct, sector-aligned and inside the device."""
    return (SB_OFFSET in offsets and len(set(offsets)) == len(offsets)
            and all(o % SECTOR_SIZE == 0 and SB_OFFSET <= o and o + SbHeader.SIZE <= dev_size
                    for o in offsets))


def write_superblock(dev: Device, sb: Superblock, *, flush: bool = True) -> None:
    """Write every copy (and the layout record) with seq + 1."""
    sb.seq += 1
    sb.write_time_ns = time.time_ns()
    block = sb.block_size
    dev.write(LAYOUT_OFFSET, encode_layout_record(sb))
    for off in sb.offsets:
        raw = encode(sb, off)
        raw += b"\0" * (-len(raw) % block)
        dev.write(off, raw)
    if flush:
        dev.flush()


def new_uuid() -> bytes:
    import uuid  # (only format needs it: ~3 ms of every start-up, with platform)

    return uuid.uuid4().bytes
