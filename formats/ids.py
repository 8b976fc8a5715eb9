"""Stable id tables of the bfs on-disk format.

Every number in this file is persistent: it is written to disk and must never
change. New entries get new numbers; retired numbers are never reused.
"""

from enum import IntEnum, IntFlag


class KeyType(IntEnum):
    """Type of a key (the `type` byte of every key header)."""

    deleted = 0            # no value; inside a node a newer bset deletes an older key
    whiteout = 1           # snapshot whiteout: hides an ancestor snapshot's key
    hash_whiteout = 2      # deleted slot of a hashed btree; lookups keep probing past it
    btree_ptr = 3          # interior node entry: where a child node lives
    extent = 4             # file data on the device, with its checksum
    inline_data = 5        # small file data stored in the key itself
    inode = 6
    dirent = 7
    xattr = 8
    alloc = 9              # per-bucket allocation state
    set = 10               # presence is the information (freespace ranges)
    accounting = 11        # space/usage counters
    snapshot = 12
    snapshot_tree = 13
    subvolume = 14
    reflink_p = 15         # pointer into the reflink btree
    reflink_v = 16         # refcounted indirect extent
    indirect_inline_data = 17  # refcounted indirect inline data
    error = 18             # marks a range whose data is known lost (fsck repair)


class BtreeId(IntEnum):
    """The btrees. Positions: see DESIGN.md and formats/FORMAT.md."""

    extents = 0         # inum : end sector : snapshot
    inodes = 1          # 0 : inum : snapshot
    dirents = 2         # dir inum : name hash : snapshot
    xattrs = 3          # inum : name hash : snapshot
    alloc = 4           # 0 : bucket : 0
    freespace = 5       # 0 : end bucket : 0 (extent-like ranges of free buckets)
    reflink = 6         # 0 : end index : 0 (extent-like)
    subvolumes = 7      # 0 : subvolume id : 0
    snapshots = 8       # 0 : snapshot id : 0
    snapshot_trees = 9  # 0 : tree id : 0
    accounting = 10     # accounting type : subtype : 0
    deleted_inodes = 11  # 0 : inum : snapshot (unlinked inodes awaiting removal)


# Which key types each btree may hold. `deleted` is implicit everywhere (it only
# exists inside bsets and journal entries, never as a live key).
BTREE_KEY_TYPES: dict[BtreeId, frozenset[KeyType]] = {
    BtreeId.extents: frozenset({KeyType.extent, KeyType.inline_data, KeyType.reflink_p,
                                KeyType.whiteout, KeyType.error}),
    BtreeId.inodes: frozenset({KeyType.inode, KeyType.whiteout}),
    BtreeId.dirents: frozenset({KeyType.dirent, KeyType.hash_whiteout, KeyType.whiteout}),
    BtreeId.xattrs: frozenset({KeyType.xattr, KeyType.hash_whiteout, KeyType.whiteout}),
    BtreeId.alloc: frozenset({KeyType.alloc}),
    BtreeId.freespace: frozenset({KeyType.set}),
    BtreeId.reflink: frozenset({KeyType.reflink_v, KeyType.indirect_inline_data,
                                KeyType.error}),
    BtreeId.subvolumes: frozenset({KeyType.subvolume}),
    BtreeId.snapshots: frozenset({KeyType.snapshot}),
    BtreeId.snapshot_trees: frozenset({KeyType.snapshot_tree}),
    BtreeId.accounting: frozenset({KeyType.accounting}),
    BtreeId.deleted_inodes: frozenset({KeyType.set}),
}

# Btrees whose positions carry a snapshot id in their low field.
SNAPSHOT_BTREES = frozenset({BtreeId.extents, BtreeId.inodes, BtreeId.dirents,
                             BtreeId.xattrs, BtreeId.deleted_inodes})

# Btrees whose keys cover a range [pos.offset - size, pos.offset): indexed by end.
EXTENT_BTREES = frozenset({BtreeId.extents, BtreeId.freespace, BtreeId.reflink})


class ChecksumType(IntEnum):
    """Checksum algorithms for metadata and data. All results are stored in a u64."""

    none = 0
    crc32c = 1
    crc64 = 2     # CRC-64/WE (ECMA-182 polynomial), via crcmod
    xxhash = 3    # xxh3 64-bit


class StrHashType(IntEnum):
    """String hash used to place dirents and xattrs (seeded per directory)."""

    xxh3_seeded = 0   # xxh3-64 of the name with the directory's 64-bit seed, >> 1


class DataType(IntEnum):
    """What a bucket holds (alloc key `data_type`)."""

    free = 0
    superblock = 1
    journal = 2
    btree = 3
    user = 4


class JsetEntryType(IntEnum):
    """Typed entries inside a journal entry (jset)."""

    btree_keys = 0    # key updates for one btree (leaf level)
    btree_root = 1    # the root pointer of one btree (every flush entry has all of them)
    blacklist = 2     # a range of journal seqs whose btree bsets must be ignored
    log = 3           # free-form UTF-8 text
    datetime = 4      # wall-clock time of the write, ns since the epoch


class SbFieldType(IntEnum):
    """Variable-length fields after the fixed superblock header."""

    journal = 0           # the journal's bucket list
    clean = 1             # written on clean close: journal position + btree roots
    seq_blacklist = 2     # journal seq ranges whose bsets are ignored
    errors = 3            # fsck error counts (history)


class FeatureIncompat(IntFlag):
    """Readers that do not know a set bit must refuse to open the image."""

    reflink = 1 << 0
    inline_data = 1 << 1
    snapshots = 1 << 2


class FeatureRoCompat(IntFlag):
    """Readers that do not know a set bit may read, but must not write."""

    alloc_info = 1 << 0   # persistent alloc keys and freespace index


class FeatureCompat(IntFlag):
    """Bits a reader may ignore."""

    fsck_error_counts = 1 << 0


class SbFlags(IntFlag):
    """Superblock `flags` word."""

    clean = 1 << 0            # the clean field is valid; no journal replay needed
    deleting_snapshots = 1 << 1  # a snapshot deletion is in progress (resumed on open)


class JsetFlags(IntFlag):
    flush = 1 << 0   # written with preflush+FUA: everything before it is durable


class NodeFlags(IntFlag):
    pass


class InodeFlags(IntFlag):
    """`flags` of an inode value (persistent)."""

    unlinked = 1 << 0    # nlink reached 0 while open; remove on next pass
    immutable = 1 << 1
    append = 1 << 2
    nodump = 1 << 3


class SubvolumeFlags(IntFlag):
    read_only = 1 << 0
    snapshot = 1 << 1      # created as a snapshot of another subvolume
    unlinked = 1 << 2      # deletion started; its snapshot is being torn down


class SnapshotFlags(IntFlag):
    deleted = 1 << 0       # dead: no subvolume and no live descendant; keys being dropped
    no_keys = 1 << 1       # interior node whose keys were moved down; to be spliced out


class AccountingType(IntEnum):
    """First field (inode) of an accounting key position; offset is the subtype."""

    data_type = 1      # offset = DataType; counters: [buckets, sectors]
    nr_inodes = 2      # offset = 0; counters: [inodes]
    snapshot = 3       # offset = snapshot id; counters: [sectors of keys at that snapshot]
    btree = 4          # offset = BtreeId; counters: [sectors of nodes]
    reflink = 5        # offset = 0; counters: [indirect sectors, referenced sectors]


ACCOUNTING_COUNTERS: dict[AccountingType, tuple[str, ...]] = {
    AccountingType.data_type: ("buckets", "sectors"),
    AccountingType.nr_inodes: ("inodes",),
    AccountingType.snapshot: ("sectors",),
    AccountingType.btree: ("sectors",),
    AccountingType.reflink: ("indirect_sectors", "referenced_sectors"),
}


class DirentType(IntEnum):
    """d_type of a dirent (values follow <dirent.h> DT_*, plus subvolume)."""

    unknown = 0
    fifo = 1
    chr = 2
    dir = 4
    blk = 6
    reg = 8
    lnk = 10
    sock = 12
    subvol = 16


class XattrType(IntEnum):
    """Namespace of an xattr name (the prefix is stored here, not in the name)."""

    user = 0
    trusted = 1
    security = 2
    system = 3
