"""Error-id injection (TESTING.md item 2; bcachefs ktest snapshot-inject).

Every catalogue id that is repairable has at least one test below that
injects exactly that state into a freshly written image (the corpus class
functions of make_corpus.py: states the writer can produce, or one precise
corruption through the format declarations, re-read from disk before the
check) and asserts:
  detect    `check -n` exits 4 and reports the id (warnings: reports it);
  converge  `check -y`, then `check -n` exits 0 (at most 2 repair runs);
  preserve  every file the injection did not touch reads back byte-identical.
INJECTIONS is the table id -> tests; a repairable id missing from it fails.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from bfs_tools.formats.fsck_errors import BY_NAME, ERRORS

from tests.fsck import lib
from tests.fsck.make_corpus import CLASSES, Ctx, by_num, ids_reported, make_unclean

# error name -> corpus classes (make_corpus.py) that inject exactly that state
INJECTIONS: dict[str, list[int]] = {
    "sb_primary_bad": [2, 3, 6],
    "sb_backup_bad": [4, 5],
    "sb_layout_bad": [7, 8],
    "sb_metadata_mismatch": [9],
    "journal_entry_bad_csum": [10, 13],
    "journal_entries_missing": [11],
    "journal_seq_backwards": [14],
    "journal_key_bad": [12],
    "btree_node_unreadable": [20, 21, 22],
    "btree_node_bad_level": [25, 33],
    "btree_node_bad_range": [26],
    "btree_node_keys_unsorted": [23, 24],
    "btree_node_referenced_twice": [27],
    "btree_ptr_to_free_bucket": [28],
    "btree_ptr_stale": [29],
    "btree_root_bad": [31],
    "btree_bset_bad_csum": [32],
    "btree_node_seq_mismatch": [30],
    "key_type_not_allowed": [40],
    "key_bad_value": [41, 43, 44, 45, 46],
    "key_bad_pos": [47, 48],
    "alloc_key_wrong": [51],
    "alloc_key_missing": [52],
    "freespace_wrong": [53],
    "accounting_wrong": [54, 55],
    "ptr_to_free_bucket": [58],
    "ptr_stale": [56],
    "ptr_beyond_device": [57],
    "bucket_data_type_mismatch": [59],
    "sb_journal_bucket_not_marked": [60],
    "snapshot_bad_links": [61, 62],
    "snapshot_tree_bad": [63],
    "subvol_bad_snapshot": [64],
    "subvol_root_missing": [65],
    "key_in_missing_snapshot": [66],
    "snapshot_deletion_unfinished": [67],
    "extents_overlap_across_snapshots": [68],
    "snapshot_bad_depth": [69],
    "reflink_refcount_wrong": [71],
    "reflink_p_to_missing": [72],
    "reflink_v_unreferenced": [73],
    "inode_bad_mode": [49],
    "inode_size_wrong": [81],
    "inode_sectors_wrong": [82],
    "inode_unlinked_unreferenced": [83],
    "inode_dir_backpointer_wrong": [84],
    "extent_no_inode": [90],
    "extents_overlap": [91],
    "extent_past_eof": [85],
    "extent_in_non_regular": [92],
    "data_checksum_bad": [93],
    "dirent_target_missing": [100],
    "dirent_type_wrong": [101, 42],
    "dirent_bad_hash": [102],
    "dirent_in_non_dir": [103],
    "dirent_bad_name": [50],
    "dirent_duplicate": [105],
    "dirent_to_subvol_bad": [106],
    "xattr_no_inode": [110],
    "xattr_bad_hash": [111],
    "root_dir_missing": [120],
    "root_not_dir": [121],
    "dir_unreachable": [122],
    "dir_loop": [123],
    "dir_multiple_links": [124],
    "inode_unreachable": [125],
    "nlink_wrong": [130, 131],
}

INJECTED = sorted({n for nums in INJECTIONS.values() for n in nums})


def test_every_repairable_id_has_an_injection():
    missing = [e.name for e in ERRORS if e.repairable and e.name not in INJECTIONS]
    assert not missing, f"repairable ids without an injection test: {missing}"
    for name, nums in INJECTIONS.items():
        assert name in BY_NAME, name
        assert nums, name
        for n in nums:
            assert name in by_num(n).ids, f"class {n} does not declare {name}"


def test_every_class_is_in_the_table():
    assert {cl.num for cl in CLASSES if cl.ids} <= set(INJECTED)


@pytest.fixture(scope="session")
def base_image(tmp_path_factory):
    d = tmp_path_factory.mktemp("base")
    img = d / "base.img"
    m = lib.build_base(img)
    return img, m


@pytest.mark.damaged
@pytest.mark.parametrize("num", INJECTED, ids=[by_num(n).dirname for n in INJECTED])
def test_injection(num: int, base_image, tmp_path: Path):
    cl = by_num(num)
    base, m = base_image
    img = tmp_path / "img"
    shutil.copyfile(base, img)
    if cl.unclean:
        make_unclean(img)
    touched = cl.fn(Ctx(img, m)) or set()
    # detect
    r = lib.run_cli("check", "-n", *cl.args, img)
    assert not r.crashed, r
    assert set(cl.ids) <= ids_reported(r), r
    warnings_only = all(BY_NAME[n].severity == "warning" for n in cl.ids)
    assert r.rc == (0 if warnings_only and r.rc == 0 else 4), r
    # converge: at most two repair runs
    for attempt in range(2):  # noqa: B007
        y = lib.run_cli("check", "-y", *cl.args, img)
        assert not y.crashed and y.rc in (0, 1), y
        n = lib.run_cli("check", "-n", *cl.args, img)
        assert not n.crashed, n
        if n.rc == 0:
            break
    assert n.rc == 0, f"not clean after {attempt + 1} repair runs: {n}"
    # preserve
    assert not lib.lost(img, m.files, set(touched))
