"""`cp -r`'s bulk path (remap.py BulkKeys): the copy's keys queued with their
trigger effects summed; its new keys (inodes, dirents, the copies' reflink_p,
the new reflink_v) written as new leaves after each btree's last key
(Transaction.update_appended, Btrees.append_encoded), the sources' converted
extents applied leaf by leaf (Btrees.apply_sorted).

The trees here are large enough for the copy to split leaves several ways in
a small-node image, and mix what the bulk path takes (new inodes, dirents of
new directories, whole-file clones, copies of copies) with what it leaves to
the per-key triggers (the parent directory, xattrs, symlinks, a read-only
source). After each copy every counter is what recomputing from the keys
gives (check_reflink, and `bfs check -n` after the test), and the copy reads
back identical.
"""

from __future__ import annotations

import json
import os

from bfs_tools.formats.ids import AccountingType, BtreeId, KeyType

from bfs_tools.alloc.accounting import read_counters
from bfs_tools.btree.tree import Btrees
from bfs_tools.keys import decode_keys
from bfs_tools.store import Store
from tests.cli.test_reflink import (
    _tree,
    check_reflink,
    data_of,
    describe,
    needs_snapshots,
    space,
)
from tests.fsck.lib import run_cli

FILES = 600


def _many(root) -> None:
    """FILES files over 12 directories: inline, one extent, several extents;
    some hard links, xattrs and symlinks (whose data keys are queued the usual
    way, among the copy's appended extents)."""
    for i in range(FILES):
        d = root / f"dir{i % 12:02d}"
        d.mkdir(exist_ok=True)
        size = (0, 100, 3000, 9000, 70 * 1024)[i % 5]
        (d / f"file-{i:04d}").write_bytes(data_of(size, i))
        if i % 50 == 7:
            os.setxattr(d / f"file-{i:04d}", "user.n", str(i).encode())
        if i % 97 == 3:
            os.link(d / f"file-{i:04d}", root / f"link-{i}")
        if i % 150 == 11:
            os.symlink(f"file-{i:04d}", d / f"sym-{i:04d}")


def view_of(img, path: str) -> dict:
    """describe(), with each hard link's id (numbered in the order the walk met
    it, which the directories' hash seeds decide) replaced by the names of its
    links."""
    d = describe(img, path)
    links: dict = {}
    for rel, v in d.items():
        if v[9] is not None:
            links.setdefault(v[9], []).append(rel)
    return {rel: (*v[:9], v[9] is not None and tuple(sorted(links[v[9]])), *v[10:])
            for rel, v in d.items()}


def _inodes(img) -> int:
    store = Store.open(str(img))
    try:
        return read_counters(store.btrees, AccountingType.nr_inodes)[0]
    finally:
        store.close()


def test_cp_many_files_small_nodes(bfs, formatted, tmp_path):
    """4 KiB nodes: every btree of the copy splits into many leaves at once."""
    img = formatted("64M", "--btree-node-size", "4k", "--block-size", "1k")
    host = tmp_path / "many"
    host.mkdir()
    _many(host)
    bfs("put", img, host, "/src", "-r")
    view = view_of(img, "/src")
    inodes = _inodes(img)
    before = check_reflink(img)
    bfs("cp", img, "/src", "/dst", "-r", "--reflink=always")
    assert view_of(img, "/dst") == view == view_of(img, "/src")
    s = check_reflink(img)
    assert s["user_sectors"] == before["user_sectors"]
    assert _inodes(img) == 2 * inodes - 1          # every inode but the root's
    # a copy of the copy references the indirect keys once more
    bfs("cp", img, "/dst", "/dst2", "-r", "--reflink=always")
    assert view_of(img, "/dst2") == view
    check_reflink(img)
    for p in ("/src", "/dst", "/dst2"):
        bfs("rm", img, p, "-r")
    s = check_reflink(img)
    assert s["indirect"] == 0 and s["user_sectors"] == 0


def test_cp_writes_its_new_keys_as_appended_leaves(formatted, tmp_path, bfs, monkeypatch):
    """The copy (the real command, run in this process) appends its new keys
    in all four btrees, the symlinks' data keys encoded in among its extents;
    the image then checks clean and the copy reads back identical."""
    img = formatted("64M", "--btree-node-size", "4k", "--block-size", "1k")
    host = tmp_path / "many"
    host.mkdir()
    _many(host)
    bfs("put", img, host, "/src", "-r")
    appended = []
    real = Btrees.append_encoded

    symlinks = []

    def spy(self, btree_id, encoded, seq):
        done = real(self, btree_id, encoded, seq)
        appended.append((BtreeId(btree_id).name, done))
        if btree_id == BtreeId.extents:     # (the copies' own keys are reflink_p)
            symlinks.extend(k for k in decode_keys(b"".join(encoded))
                            if k.type == KeyType.inline_data)
        return done

    monkeypatch.setattr(Btrees, "append_encoded", spy)
    assert run_cli("cp", img, "/src", "/dst", "-r", "--reflink=always").rc == 0
    assert sorted(appended) == [("dirents", True), ("extents", True), ("inodes", True),
                                ("reflink", True)]
    assert len(symlinks) == len(list(host.rglob("sym-*")))
    monkeypatch.undo()
    assert view_of(img, "/dst") == view_of(img, "/src")
    check_reflink(img)


def test_cp_into_existing_directory_merges(bfs, formatted, tmp_path):
    """cp -r SRC DIR where DIR/SRC exists: the entries go into the existing
    directory (looked up, queued per key), everything below them in bulk."""
    img = formatted("64M")
    host = tmp_path / "tree"
    _tree(host)
    bfs("put", img, host, "/src", "-r")
    bfs("mkdir", img, "/dst")
    bfs("mkdir", img, "/dst/src")
    bfs("cp", img, "/src", "/dst", "-r")
    assert describe(img, "/dst/src") == describe(img, "/src")
    check_reflink(img)


@needs_snapshots
def test_cp_of_read_only_snapshot_keeps_per_key_path(bfs, formatted, tmp_path):
    """A read-only source is not rewritten: its files take the per-key way,
    in the same transaction as the bulk keys of the new inodes and dirents."""
    img = formatted("64M")
    host = tmp_path / "tree"
    _tree(host)
    bfs("subvolume", "create", img, "/sv")
    bfs("put", img, host, "/sv/t", "-r")
    bfs("snapshot", "create", img, "/sv", "/ro", "--read-only")
    old = space(img)
    bfs("cp", img, "/ro/t", "/copy", "-r")
    assert describe(img, "/copy") == describe(img, "/sv/t")
    check_reflink(img)
    assert space(img) != old
    usage = json.loads(bfs("dump", "usage", img, "--json").out)
    assert usage["reflink"]["indirect_sectors"] > 0
