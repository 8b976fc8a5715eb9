"""The catalogue of fsck error ids.

The id of an entry is persistent (counts are stored in the superblock `errors`
field by id) and must never change or be reused. `repair`:
  safe  `check -p` (preen) repairs it without asking;
  yes   repairable, but only with -y or an interactive yes;
  no    detected, cannot be repaired.
"""

from collections import namedtuple


# collections.namedtuple rather than typing.NamedTuple: typing costs ~3 ms of
# every command's start-up, and the open path imports this catalogue.
class FsckError(namedtuple("FsckError", "id name pass_name severity repair description")):
    """severity: "error" or "warning"; repair: "safe", "yes" or "no"."""

    __slots__ = ()

    @property
    def repairable(self) -> bool:
        return self.repair != "no"


def _e(id, name, pass_name, repair, description, severity="error"):
    return FsckError(id, name, pass_name, severity, repair, description)


ERRORS: tuple[FsckError, ...] = (
    # superblock and layout
    # (warnings: a crash during a superblock write leaves copies one write apart or
    # one torn, which no check can tell from damage; the newest valid copy holds the
    # state, and any writable open rewrites every copy and the layout record. After a
    # crash at any point `check -n` must exit 0 — tests/crash.)
    _e(1, "sb_primary_bad", "superblock", "safe", "primary superblock unreadable; a backup was used",
       "warning"),
    _e(2, "sb_backup_bad", "superblock", "safe", "a backup superblock copy is unreadable or differs",
       "warning"),
    _e(3, "sb_layout_bad", "superblock", "safe", "layout record unreadable or disagrees with the superblock",
       "warning"),
    _e(4, "sb_field_bad", "superblock", "no", "a superblock field is invalid"),
    _e(5, "sb_journal_buckets_bad", "superblock", "no", "journal bucket list invalid (out of range or duplicated)"),
    _e(6, "sb_metadata_mismatch", "superblock", "yes",
       "superblock checksum type or UUID disagrees with every btree node and journal entry; "
       "taken from them"),
    # journal
    _e(10, "journal_entry_bad_csum", "journal", "safe", "a journal entry has a bad checksum", "warning"),
    _e(11, "journal_entries_missing", "journal", "yes", "journal seqs missing in the replay range"),
    _e(12, "journal_seq_backwards", "journal", "yes", "journal seq lower than an earlier entry"),
    _e(13, "journal_key_bad", "journal", "yes", "a key in the journal fails validation; dropped"),
    # btree topology
    _e(20, "btree_node_unreadable", "topology", "yes", "btree node unreadable (checksum, magic or header)"),
    _e(21, "btree_node_bad_level", "topology", "yes", "btree node level differs from what its parent expects"),
    _e(22, "btree_node_bad_range", "topology", "yes", "btree node min/max keys differ from its parent pointer"),
    _e(23, "btree_node_keys_unsorted", "topology", "yes", "keys in a btree node are out of order or outside its range"),
    _e(24, "btree_node_referenced_twice", "topology", "yes", "a btree node is referenced by two parents"),
    _e(25, "btree_ptr_to_free_bucket", "topology", "yes", "a btree pointer points into a free bucket"),
    _e(26, "btree_ptr_stale", "topology", "yes", "a btree pointer's generation differs from its bucket's"),
    _e(27, "btree_root_bad", "topology", "yes", "a btree root is missing or unreadable; btree rebuilt empty"),
    _e(28, "btree_bset_bad_csum", "topology", "safe", "a bset after the first has a bad checksum; ignored", "warning"),
    _e(29, "btree_node_seq_mismatch", "topology", "yes", "child node_seq differs from the parent pointer"),
    # key validation
    _e(40, "key_type_not_allowed", "keys", "yes", "key type not allowed in this btree; deleted"),
    _e(41, "key_bad_value", "keys", "yes", "key value fails validation; deleted"),
    _e(42, "key_bad_pos", "keys", "yes", "key position invalid for its btree; deleted"),
    # allocation
    _e(50, "alloc_key_wrong", "alloc", "safe", "alloc key differs from what the btrees reference"),
    _e(51, "alloc_key_missing", "alloc", "safe", "bucket in use has no alloc key"),
    _e(52, "freespace_wrong", "alloc", "safe", "freespace index differs from the alloc keys"),
    _e(53, "accounting_wrong", "alloc", "safe", "space accounting differs from the recomputed value"),
    _e(54, "ptr_to_free_bucket", "alloc", "yes", "data extent points into a bucket not marked as user data"),
    _e(55, "ptr_stale", "alloc", "yes", "data pointer generation differs from its bucket's; extent dropped"),
    _e(56, "ptr_beyond_device", "alloc", "yes", "pointer outside the device; key dropped"),
    _e(57, "bucket_data_type_mismatch", "alloc", "yes", "bucket holds two kinds of data"),
    _e(58, "sb_journal_bucket_not_marked", "alloc", "safe", "superblock or journal bucket not marked in alloc"),
    # snapshots and subvolumes
    _e(60, "snapshot_bad_links", "snapshots", "yes", "snapshot parent/child links disagree"),
    _e(61, "snapshot_id_order", "snapshots", "no", "child snapshot id not below its parent's"),
    _e(62, "snapshot_tree_bad", "snapshots", "yes", "snapshot tree entry disagrees with its snapshots"),
    _e(63, "subvol_bad_snapshot", "snapshots", "yes", "subvolume points to a missing or interior snapshot"),
    _e(64, "subvol_root_missing", "snapshots", "yes", "subvolume root inode missing"),
    _e(65, "key_in_missing_snapshot", "snapshots", "yes", "key in a snapshot that does not exist; deleted"),
    _e(66, "snapshot_deletion_unfinished", "snapshots", "safe", "interrupted snapshot deletion; finished"),
    _e(67, "extents_overlap_across_snapshots", "snapshots", "yes", "extents of related snapshots overlap partially"),
    _e(68, "snapshot_bad_depth", "snapshots", "yes", "snapshot depth or tree id wrong"),
    # reflink
    _e(70, "reflink_refcount_wrong", "reflink", "safe", "indirect extent refcount differs from references"),
    _e(71, "reflink_p_to_missing", "reflink", "yes", "reflink pointer to a missing indirect range; marked error"),
    _e(72, "reflink_v_unreferenced", "reflink", "safe", "indirect extent with no references; freed"),
    # inodes
    _e(80, "inode_bad_mode", "inodes", "yes", "inode has an invalid file type"),
    _e(81, "inode_size_wrong", "inodes", "yes", "inode size smaller than its data extents"),
    _e(82, "inode_sectors_wrong", "inodes", "safe", "inode sector count differs from its extents"),
    _e(83, "inode_unlinked_unreferenced", "inodes", "safe", "unlinked inode with no references; deleted"),
    _e(84, "inode_dir_backpointer_wrong", "inodes", "safe", "inode's dirent backpointer is wrong"),
    # extents
    _e(90, "extent_no_inode", "extents", "yes", "extent of an inode that does not exist; deleted"),
    _e(91, "extents_overlap", "extents", "yes", "extents of one file overlap; later one kept"),
    _e(92, "extent_past_eof", "extents", "yes", "extent beyond the file's size", "warning"),
    _e(93, "extent_in_non_regular", "extents", "yes", "data extent of a directory or device; deleted"),
    _e(94, "data_checksum_bad", "extents", "yes", "file data does not match its checksum (--verify-data)"),
    # dirents
    _e(100, "dirent_target_missing", "dirents", "yes", "dirent names an inode that does not exist; deleted"),
    _e(101, "dirent_type_wrong", "dirents", "safe", "dirent type differs from the inode's mode"),
    _e(102, "dirent_bad_hash", "dirents", "yes", "dirent at the wrong hash slot; moved"),
    _e(103, "dirent_in_non_dir", "dirents", "yes", "dirent in an inode that is not a directory; deleted"),
    _e(104, "dirent_bad_name", "dirents", "yes", "dirent name empty, too long, '.', '..' or with '/' or NUL"),
    _e(105, "dirent_duplicate", "dirents", "yes", "two dirents with one name in a directory"),
    _e(106, "dirent_to_subvol_bad", "dirents", "yes", "subvolume dirent names a missing subvolume"),
    # xattrs
    _e(110, "xattr_no_inode", "xattrs", "yes", "xattr of an inode that does not exist; deleted"),
    _e(111, "xattr_bad_hash", "xattrs", "yes", "xattr at the wrong hash slot; moved"),
    # root and directory structure
    _e(120, "root_dir_missing", "root", "yes", "root directory missing; recreated"),
    _e(121, "root_not_dir", "root", "yes", "root inode is not a directory"),
    _e(122, "dir_unreachable", "dirs", "yes", "directory not reachable from the root; moved to lost+found"),
    _e(123, "dir_loop", "dirs", "yes", "directory loop; broken and moved to lost+found"),
    _e(124, "dir_multiple_links", "dirs", "yes", "directory named by more than one dirent"),
    _e(125, "inode_unreachable", "dirs", "yes", "inode with no dirent; moved to lost+found"),
    # nlinks
    _e(130, "nlink_wrong", "nlinks", "safe", "inode link count differs from the dirents naming it"),
)

BY_NAME = {e.name: e for e in ERRORS}
BY_ID = {e.id: e for e in ERRORS}
