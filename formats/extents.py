"""File data keys: extents btree, key at (inum, end sector, snapshot), size = sectors.

An `extent` points at a checksummed region of data written on the device. The
key may cover only part of the region (after a partial overwrite split it):
`offset` says where inside the region its first sector is. Reads verify the
whole region's checksum, then take the key's part.
`inline_data`: the value is the data itself (zero-filled up to the key's size).
"""

from construct import GreedyBytes, Int8ul, Int16ul, Int32ul, Int64ul, Struct

ExtentValue = Struct(
    "sector" / Int64ul * "device sector where the checksummed region starts",
    "gen" / Int8ul * "generation of the region's bucket when it was written",
    "csum_type" / Int8ul * "ChecksumType of the region",
    "flags" / Int16ul * "reserved, 0",
    "region_sectors" / Int32ul * "length of the checksummed region in sectors",
    "offset" / Int32ul * "sectors from the region start to this key's first sector",
    "pad" / Int32ul * "reserved, 0",
    "csum" / Int64ul * "checksum of the region's bytes",
)

InlineDataValue = Struct(
    "data" / GreedyBytes * "file bytes of the key's range (shorter: the rest reads as zeros)",
)
