"""Directory entries: dirents btree, key at (dir inum, hash slot, snapshot).

The slot is the seeded 63-bit string hash of the name; on collision the next
free slot is used (linear probing). A deleted entry whose slot continues a probe
chain becomes a `hash_whiteout`.
"""

from construct import GreedyBytes, Int8ul, Int64ul, Struct

DirentValue = Struct(
    "target" / Int64ul * "target inode number; d_type subvol: child subvol id | parent subvol id << 32",
    "d_type" / Int8ul * "DirentType",
    "name" / GreedyBytes * "1..255 bytes, no '/' and no NUL",
)
