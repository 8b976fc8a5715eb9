"""`bfs format --source` and `bfs put -r` (one engine, fs/populate.py) against the host
tree they copied: content, mode, owner, times (ns), link counts and groups, symlink
targets, device numbers, xattrs, sparse holes; and `bfs get -r` back out again."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.fs_checks import verify_image
from tests.fs_tree import (
    compare_trees,
    describe_host,
    describe_image,
    is_root,
    make_everything_tree,
)

SAMPLE = Path(__file__).resolve().parents[2] / "fixtures" / "sample-tree"


def assert_same(expected, actual, **kw) -> None:
    problems = compare_trees(expected, actual, **kw)
    assert not problems, "\n".join(p[:300] for p in problems[:30])


@pytest.fixture
def everything(tmp_path):
    src = tmp_path / "src"
    make_everything_tree(src)
    return src


def test_format_source_sample_tree(bfs, new_image, tmp_path):
    # a private copy, so reading it cannot change the times we compare
    src = tmp_path / "sample"
    shutil.copytree(SAMPLE, src, symlinks=True)
    before = describe_host(src)
    img = new_image()
    r = bfs("format", img, "--size", "64M", "--source", src)
    assert "copied" in r.text and r.errtext == ""
    assert_same(before, describe_image(bfs, img, stat_every=True), ctime=True)
    out = tmp_path / "out"
    bfs("get", img, "/", out, "-r")
    assert_same(before, describe_host(out))
    assert not verify_image(img)


def test_format_source_every_file_type(bfs, new_image, tmp_path, everything):
    before = describe_host(everything)
    img = new_image()
    d = json.loads(bfs("format", img, "--size", "128M", "--source", everything, "--json").out)
    rep = d["populate"]
    assert rep["problems"] == [] and rep["hardlinks"] == 3 and rep["symlinks"] == 6
    assert rep["special"] == (4 if is_root() else 2)
    image = describe_image(bfs, img)
    # the image holds everything, ctime included (the host's, as mke2fs -d)
    assert_same(before, image, ctime=True)
    # and get -r recreates it (ctime cannot be set on a host; sockets are recreated)
    out = tmp_path / "out"
    r = bfs("get", img, "/", out, "-r", *(["--devices"] if is_root() else []),
            check_rc=None)
    assert r.rc == (0 if is_root() else 1), r
    assert_same(before, describe_host(out), specials=is_root())
    # sparse files keep their holes on the way out
    for name in ("sparse", "hole-at-end", "all-hole"):
        assert (out / name).stat().st_blocks <= (everything / name).stat().st_blocks + 8, name
    st = json.loads(bfs("stat", img, "/all-hole", "--json").out)
    assert st["extents"] == [] and st["size"] == 2 << 20
    assert not verify_image(img)


def test_format_source_preserves_the_root_directory(bfs, new_image, everything):
    os.chmod(everything, 0o750)
    if is_root():
        os.chown(everything, 321, 654)
    os.setxattr(everything, "user.root", b"of the tree")
    os.utime(everything, ns=(1_000_000_001, 2_000_000_002))
    img = new_image()
    bfs("format", img, "--size", "128M", "--source", everything)
    st = json.loads(bfs("stat", img, "/", "--json").out)
    assert st["mode"] == "40750" and st["mtime_sec"] == 2 and st["mtime_nsec"] == 2
    assert st["xattrs"] == {"user.root": b"of the tree".hex()}
    if is_root():
        assert (st["uid"], st["gid"]) == (321, 654)


def test_put_r_into_an_existing_image_uses_the_same_engine(bfs, formatted, tmp_path, everything):
    before = describe_host(everything)
    img = formatted("128M")
    bfs("mkdir", img, "/existing")
    (tmp_path / "f").write_bytes(b"already there")
    bfs("put", img, tmp_path / "f", "/existing/f")
    r = bfs("put", img, everything, "/copy", "-r")
    assert r.errtext == ""
    image = describe_image(bfs, img, "/copy")
    # the new top directory is a copy of the source directory itself
    assert_same(before, image, ctime=True)
    # into an existing directory: under the source's own name; twice: merged,
    # entries already there are reported and left alone
    before = describe_host(everything)      # the first put read the files: new atimes
    r = bfs("put", img, everything, "/existing", "-r")
    assert_same(before, describe_image(bfs, img, "/existing/src"), ctime=True)
    r = bfs("put", img, everything, "/existing", "-r", check_rc=1)
    assert "already exists in the image; skipped" in r.errtext
    assert bfs("cat", img, "/existing/f").out == b"already there"
    assert not verify_image(img)


def test_put_r_hard_links_within_one_put_only(bfs, formatted, tmp_path):
    """Hard links are recreated among the files of one put; a second put of a link
    of an already copied file makes a separate file (it cannot know)."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"linked")
    os.link(src / "a", src / "b")
    img = formatted()
    bfs("put", img, src, "/one", "-r")
    bfs("put", img, src / "a", "/single")
    sa = json.loads(bfs("stat", img, "/one/a", "--json").out)
    sb = json.loads(bfs("stat", img, "/one/b", "--json").out)
    ss = json.loads(bfs("stat", img, "/single", "--json").out)
    assert sa["inum"] == sb["inum"] != ss["inum"]
    assert sa["nlink"] == 2 and ss["nlink"] == 1
    assert not verify_image(img)


def test_many_small_files_and_wide_directory(bfs, new_image, tmp_path):
    src = tmp_path / "wide"
    src.mkdir()
    for i in range(3000):
        (src / f"file-{i:05d}-{'x' * (i % 50)}").write_bytes(str(i).encode() * (i % 7))
    before = describe_host(src)
    img = new_image()
    bfs("format", img, "--size", "64M", "--source", src)
    listing = json.loads(bfs("ls", img, "/", "--json").out)
    assert len(listing) == 3000
    out = tmp_path / "out"
    bfs("get", img, "/", out, "-r")
    assert_same(before, describe_host(out))
    assert not verify_image(img)


def test_the_image_inside_its_source_tree_is_not_copied(bfs, new_image, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_bytes(b"a")
    img = new_image("src/inside.img")
    r = bfs("format", img, "--size", "64M", "--source", src)
    assert "inside.img: is the image being written; skipped" in r.errtext
    assert [e["name"] for e in json.loads(bfs("ls", img, "/", "--json").out)] == ["a"]
    r = bfs("put", img, src, "/again", "-r", check_rc=1)
    assert "is the image being written" in r.errtext
    assert not verify_image(img)
