"""The journal: a ring of buckets holding journal entries (jsets).

A jset is a checksummed header followed by typed entries. Jsets start at block
boundaries and never span a bucket. Replay takes the newest valid *flush* jset
and applies the btree_keys entries of every jset from its `last_seq` to it.
"""

from construct import Bytes, Int8ul, Int32ul, Int64ul, Padding, Struct

JsetHeader = Struct(
    "csum" / Int64ul * "checksum (superblock csum_type) of every byte after this field, entries included",
    "magic" / Int64ul * "JSET_MAGIC xor the first 8 bytes of the internal UUID (little endian)",
    "seq" / Int64ul * "sequence number: monotonic, never reused",
    "last_seq" / Int64ul * "oldest seq still needed for replay when this entry is the newest",
    "flags" / Int32ul * "JsetFlags (flush)",
    "bytes" / Int32ul * "bytes of entries following this header",
)

JSET_HEADER_SIZE = JsetHeader.sizeof()

JsetEntryHeader = Struct(
    "bytes" / Int32ul * "bytes of payload following this entry header",
    "type" / Int8ul * "JsetEntryType",
    "btree_id" / Int8ul * "BtreeId (btree_keys, btree_root)",
    "level" / Int8ul * "btree level (btree_root: level of the root node)",
    Padding(1),
)

JSET_ENTRY_HEADER_SIZE = JsetEntryHeader.sizeof()

JsetEntry = Struct(
    "header" / JsetEntryHeader * "the entry header",
    "payload" / Bytes(lambda this: this.header.bytes) * "keys, a root key, a seq range or text, by type",
)

# Payloads by entry type. btree_keys: concatenated keys (formats.bkey.Key);
# btree_root: exactly one btree_ptr key; log: UTF-8 text.
BlacklistPayload = Struct(
    "start" / Int64ul * "first blacklisted seq",
    "end" / Int64ul * "last blacklisted seq (inclusive)",
)

DatetimePayload = Struct(
    "time_ns" / Int64ul * "wall-clock time of the write, ns since the Unix epoch",
)
