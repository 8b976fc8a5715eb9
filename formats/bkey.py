"""Positions and key headers.

A position (bpos) is (inode, offset, snapshot), compared as one integer in that
order. Every key on disk (in btree node bsets and journal entries) is a fixed
36-byte header followed by `val_len` bytes of value whose layout depends on the
key type (see the value modules beside this one).
"""

from construct import Bytes, Int8ul, Int16ul, Int32ul, Int64ul, Struct

Bpos = Struct(
    "inode" / Int64ul * "inode number, or btree-specific first field",
    "offset" / Int64ul * "offset: sector, hash, bucket, id ... (extents: the END of the range)",
    "snapshot" / Int32ul * "snapshot id (U32_MAX = root snapshot); 0 in btrees without snapshots",
)

KeyHeader = Struct(
    "val_len" / Int16ul * "bytes of value following this header",
    "type" / Int8ul * "KeyType",
    "flags" / Int8ul * "reserved, 0",
    "size" / Int32ul * "extent btrees: sectors covered, the range is [offset - size, offset)",
    "version" / Int64ul * "version/nonce (0 unless the key type uses it)",
    "pos" / Bpos * "position of the key",
)

KEY_HEADER_SIZE = KeyHeader.sizeof()

# A key as it appears inside a journal entry or bset: header then value bytes.
Key = Struct(
    "header" / KeyHeader * "the key header",
    "value" / Bytes(lambda this: this.header.val_len) * "value; its layout depends on the key type",
)
