"""The superblock, its layout record and its variable fields.

The primary copy lives at byte 4096 (SB_OFFSET), a second right after it, and
a backup at the start of the device's last bucket. All copies are written with
the same `seq`; a reader takes the newest copy whose checksum is valid. The
standalone layout record at byte 3584 lists where the copies are, so backups
can be found when the primary is unreadable.
"""

from construct import (
    Array,
    Bytes,
    Const,
    GreedyRange,
    Int8ul,
    Int16ul,
    Int32ul,
    Int64ul,
    Padding,
    Struct,
)

from .constants import LAYOUT_MAGIC, MAX_SUPERBLOCKS, SB_MAGIC
from .journal import JsetEntry

Layout = Struct(
    "nr_superblocks" / Int8ul * "number of superblock copies",
    Padding(3),
    "sb_max_size" / Int32ul * "bytes reserved for each copy",
    "offsets" / Array(MAX_SUPERBLOCKS, Int64ul) * "byte offsets of the copies (unused: 0)",
)

LayoutRecord = Struct(
    "magic" / Const(LAYOUT_MAGIC) * "identifies a bfs layout record",
    "csum" / Int64ul * "crc32c of the bytes after this field",
    "version" / Int16ul * "format version",
    Padding(6),
    "layout" / Layout * "where the superblock copies are",
)

LAYOUT_RECORD_SIZE = 512  # the record is written as one padded sector

SuperblockHeader = Struct(
    "magic" / Const(SB_MAGIC) * "identifies a bfs superblock",
    "csum" / Int64ul * "checksum (csum_type) of every byte after this field, fields included",
    "version" / Int16ul * "format version that wrote this superblock",
    "version_min" / Int16ul * "oldest format version still present on disk",
    "csum_type" / Int8ul * "ChecksumType of metadata (superblock, journal, btree nodes)",
    "data_csum_type" / Int8ul * "default ChecksumType of file data",
    "str_hash_type" / Int8ul * "default StrHashType for dirents and xattrs",
    Padding(1),
    "uuid" / Bytes(16) * "internal UUID, random at format, never changes",
    "user_uuid" / Bytes(16) * "user-visible UUID (format --uuid)",
    "label" / Bytes(32) * "volume label, UTF-8, NUL padded",
    "offset" / Int64ul * "byte offset of this copy",
    "seq" / Int64ul * "incremented on every superblock write",
    "created_ns" / Int64ul * "format time, ns since the Unix epoch",
    "write_time_ns" / Int64ul * "time of this write, ns since the Unix epoch",
    "block_size" / Int32ul * "bytes; smallest unit of data and metadata writes",
    "bucket_size" / Int32ul * "bytes; unit of allocation",
    "btree_node_size" / Int32ul * "bytes of one btree node",
    "extent_max" / Int32ul * "bytes; largest data extent (and checksummed region)",
    "inline_data_max" / Int32ul * "bytes; files up to this size are stored inline",
    "first_bucket" / Int32ul * "first bucket after the leading superblock copies",
    "nbuckets" / Int64ul * "number of buckets on the device",
    "device_size" / Int64ul * "bytes of the device when formatted",
    "features_incompat" / Int64ul * "FeatureIncompat: unknown bits forbid opening",
    "features_ro_compat" / Int64ul * "FeatureRoCompat: unknown bits forbid writing",
    "features_compat" / Int64ul * "FeatureCompat: unknown bits are ignored",
    "flags" / Int64ul * "SbFlags",
    "journal_seq_reserved" / Int64ul * "journal seqs up to this may already be in use",
    "layout" / Layout * "copy of the layout record",
    "fields_bytes" / Int32ul * "bytes of variable fields following this header",
    "pad" / Int32ul * "reserved, 0",
)

SB_HEADER_SIZE = SuperblockHeader.sizeof()

SbFieldHeader = Struct(
    "type" / Int32ul * "SbFieldType",
    "bytes" / Int32ul * "bytes of payload following this field header",
)

SbField = Struct(
    "header" / SbFieldHeader * "the field header",
    "payload" / Bytes(lambda this: this.header.bytes) * "the field's contents, by type (below)",
)

SbJournalField = Struct(
    "nr" / Int32ul * "number of journal buckets",
    Padding(4),
    "buckets" / Array(lambda this: this.nr, Int64ul) * "bucket numbers, in ring order",
)

SbCleanField = Struct(
    "journal_seq" / Int64ul * "last journal seq written; the next is journal_seq + 1",
    "journal_next" / Int32ul * "ring index of the journal bucket to write next",
    Padding(4),
    "btree_wp_bucket" / Int64ul * "bucket being filled with btree nodes (0: none)",
    "data_wp_bucket" / Int64ul * "bucket being filled with file data (0: none)",
    "btree_wp_used" / Int32ul * "bytes of the btree bucket already used",
    "data_wp_used" / Int32ul * "bytes of the data bucket already used",
    "entries" / GreedyRange(JsetEntry) * "btree_root jset entries, one per btree",
)

SeqRange = Struct(
    "start" / Int64ul * "first seq",
    "end" / Int64ul * "last seq (inclusive)",
)

SbBlacklistField = Struct(
    "nr" / Int32ul * "number of ranges",
    Padding(4),
    "ranges" / Array(lambda this: this.nr, SeqRange) * "blacklisted journal seq ranges",
)

SbErrorEntry = Struct(
    "id" / Int16ul * "fsck error id (formats.fsck_errors)",
    Padding(2),
    "count" / Int32ul * "times found, over the filesystem's life",
    "last_ns" / Int64ul * "time last found, ns since the Unix epoch",
)

SbErrorsField = Struct(
    "nr" / Int32ul * "number of entries",
    Padding(4),
    "entries" / Array(lambda this: this.nr, SbErrorEntry) * "error counts",
)
