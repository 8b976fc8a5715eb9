"""Constants of the bfs on-disk format (sizes, offsets, magic numbers, limits)."""

SECTOR_SIZE = 512
SECTOR_SHIFT = 9

U32_MAX = 0xFFFF_FFFF
U64_MAX = 0xFFFF_FFFF_FFFF_FFFF

FORMAT_VERSION = 1          # current on-disk format version
FORMAT_VERSION_MIN = 1      # oldest version this code reads

# Where the superblock lives and how big a copy may be.
LAYOUT_OFFSET = 3584        # byte offset of the standalone layout record (sector 7)
SB_OFFSET = 4096            # byte offset of the primary superblock (sector 8)
SB_MAX_SIZE = 65536         # bytes reserved for each superblock copy
MAX_SUPERBLOCKS = 4

# Magic numbers. The 16-byte superblock/layout magic is fixed; node and journal
# magics are XORed with the first 8 bytes of the filesystem's internal UUID, so
# stale structures of a previous filesystem on the same device never validate.
SB_MAGIC = bytes.fromhex("6266737e62747265652d66732100b0f5")  # "bfs~btree-fs!\0.."
LAYOUT_MAGIC = bytes.fromhex("6266736c61796f75742d726563b0f5ee")  # "bfslayout-rec..."
JSET_MAGIC = 0x245235C1A3625032
BTREE_NODE_MAGIC = 0x90135C78B99E07F5
BSET_MAGIC = 0x3E6AC1D09F2B5D17

# Filesystem namespace constants (as bcachefs).
ROOT_INODE = 4096           # inode number of the root directory
ROOT_SUBVOL = 1             # id of the root subvolume
ROOT_SNAPSHOT = U32_MAX     # id of the root snapshot; children get smaller ids
ROOT_SNAPSHOT_TREE = 1
FIRST_USER_INODE = ROOT_INODE + 1
NAME_MAX = 255              # bytes in a directory entry name
XATTR_NAME_MAX = 255
XATTR_VALUE_MAX = 65000     # a value must fit in one key
SYMLINK_MAX = 4095          # bytes of a symlink target (stored as inline data)

# Size limits (bytes unless noted).
BLOCK_SIZE_MIN = 512
BLOCK_SIZE_MAX = 65536
BLOCK_SIZE_DEFAULT = 4096
BUCKET_SIZE_MIN = 16384
BUCKET_SIZE_MAX = 8 << 20
BTREE_NODE_SIZE_MIN = 4096
BTREE_NODE_SIZE_MAX = 1 << 20
BTREE_NODE_SIZE_DEFAULT = 256 << 10
EXTENT_MAX_DEFAULT = 256 << 10  # a data extent (and its checksum) covers at most this
INLINE_DATA_MAX_DEFAULT = 2048  # files up to this size are stored in their extent key
KEY_VALUE_MAX = 65535           # a key's value length is a u16
BTREE_MAX_DEPTH = 8
JOURNAL_BUCKETS_MIN = 4
JOURNAL_BUCKETS_MAX = 256
JOURNAL_BYTES_MAX = 64 << 20
MIN_DATA_BUCKETS = 8            # format refuses devices with fewer free buckets

# Journal seqs are handed out in reservations recorded in the superblock; after an
# unclean shutdown everything from the last flush to the reservation is blacklisted.
JOURNAL_SEQ_RESERVATION = 1024

# Reflink indexes live in one 56-bit space, as bcachefs.
REFLINK_IDX_MAX = (1 << 56) - 1
REFLINK_REFCOUNT_MAX = (1 << 63) - 1
