"""Snapshots, snapshot trees and subvolumes.

snapshots btree, key at (0, id, 0): the tree of snapshot ids. The root has id
U32_MAX; a child always has a smaller id than its parent, so among the versions
of one key, the nearest visible ancestor is the first in ascending snapshot order.
snapshot_trees btree, key at (0, tree id, 0). subvolumes btree, key at (0, id, 0).
"""

from construct import Array, Int32ul, Int64sl, Int64ul, Struct

SnapshotValue = Struct(
    "flags" / Int32ul * "SnapshotFlags",
    "parent" / Int32ul * "parent snapshot id (0 for a tree root)",
    "children" / Array(2, Int32ul) * "child snapshot ids (0 = none), larger id first",
    "subvol" / Int32ul * "subvolume whose current snapshot this is (0 for interior nodes)",
    "tree" / Int32ul * "snapshot tree id",
    "depth" / Int32ul * "distance from the tree root",
    "pad" / Int32ul * "reserved, 0",
)

SnapshotTreeValue = Struct(
    "master_subvol" / Int32ul * "the original (non-snapshot) subvolume of this tree",
    "root_snapshot" / Int32ul * "snapshot id at the root of this tree",
)

SubvolumeValue = Struct(
    "flags" / Int32ul * "SubvolumeFlags",
    "snapshot" / Int32ul * "current snapshot id (always a leaf of the snapshot tree)",
    "inode" / Int64ul * "inode number of the subvolume's root directory",
    "parent" / Int32ul * "subvolume this one was created in (0 for the root subvolume)",
    "pad" / Int32ul * "reserved, 0",
    "otime_sec" / Int64sl * "creation time, seconds",
    "otime_nsec" / Int32ul * "creation time, nanoseconds",
    "pad2" / Int32ul * "reserved, 0",
)
