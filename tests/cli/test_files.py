"""File commands round trips (e2fsprogs d_loaddump style): put -> get/cat -> byte
compare for every interesting size, sparse files, overwrite, mv, ln, ln -s, rm,
mkdir, ls (-l, -R, --json), stat (--json), xattrs and owners, and data checksum
verification. Every image is also verified by tests/fs_checks.verify_image (and by
`bfs check -n` once it exists, through conftest)."""

from __future__ import annotations

import json
import os
import re
import stat

import pytest

from tests.fs_checks import verify_image
from tests.helpers import flip_byte

BLOCK = 4096
MiB = 1 << 20
SIZES = {"empty": 0, "one": 1, "block-1": BLOCK - 1, "block": BLOCK, "block+1": BLOCK + 1,
         "inline-max": 2048, "inline-max+1": 2049, "1MiB+7": MiB + 7,
         "several-buckets": 3 * MiB + 1}


def data_of(size: int, seed: int = 0) -> bytes:
    import random

    return random.Random(size * 31 + seed).randbytes(size)


def stat_json(bfs, img, path: str) -> dict:
    return json.loads(bfs("stat", img, path, "--json").out)


def assert_consistent(img) -> None:
    problems = verify_image(img)
    assert not problems, "\n".join(problems[:20])


@pytest.fixture
def img(formatted):
    return formatted("64M")


# ---------------------------------------------------------------------- round trips


@pytest.mark.parametrize("label", list(SIZES))
def test_put_get_cat_round_trip(bfs, img, tmp_path, label):
    size = SIZES[label]
    src = tmp_path / "src"
    src.write_bytes(data_of(size))
    bfs("put", img, src, f"/{label}")
    assert bfs("cat", img, f"/{label}").out == src.read_bytes()
    out = tmp_path / "out"
    bfs("get", img, f"/{label}", out)
    assert out.read_bytes() == src.read_bytes()
    st = stat_json(bfs, img, f"/{label}")
    assert st["size"] == size and st["type"] == "file" and st["nlink"] == 1
    kinds = {e["type"] for e in st["extents"]}
    if size == 0:
        assert st["extents"] == [] and st["sectors"] == 0
    elif size <= 2048:
        assert kinds == {"inline_data"}
    else:
        assert kinds == {"extent"}
        covered = sum(e["size"] for e in st["extents"]) * 512
        assert covered == -(-size // BLOCK) * BLOCK == st["sectors"] * 512
    if size > 64 << 10:      # more than one bucket (64 KiB here): several extents
        assert len(st["extents"]) >= size // (64 << 10)
    assert_consistent(img)


def test_many_files_of_every_size_in_one_image(bfs, img, tmp_path):
    bfs("mkdir", img, "/d")
    for label, size in SIZES.items():
        p = tmp_path / label
        p.write_bytes(data_of(size, 1))
        bfs("put", img, p, f"/d/{label}")
    out = tmp_path / "out"
    bfs("get", img, "/d", out, "-r")
    for label, size in SIZES.items():
        assert (out / label).read_bytes() == data_of(size, 1), label
    assert_consistent(img)


def _sparse_source(path, size: int, pieces) -> list[tuple[int, int]]:
    with open(path, "wb") as f:
        f.truncate(size)
        for off, n in pieces:
            f.seek(off)
            f.write(data_of(n, off))
    return [(off, off + n) for off, n in pieces]


def test_sparse_file_keeps_its_holes(bfs, img, tmp_path):
    src = tmp_path / "sparse"
    data = _sparse_source(src, 20 * MiB, [(MiB, 5000), (7 * MiB + 100, 70000), (19 * MiB, 10)])
    bfs("put", img, src, "/sparse")
    st = stat_json(bfs, img, "/sparse")
    assert st["size"] == 20 * MiB
    # extents cover only the blocks holding data: the holes stay holes in the image
    for e in st["extents"]:
        start, end = (e["pos"]["offset"] - e["size"]) * 512, e["pos"]["offset"] * 512
        assert any(start < -(-b // BLOCK) * BLOCK and a // BLOCK * BLOCK < end
                   for a, b in data), (start, end)
    assert st["sectors"] * 512 <= 100 << 10
    out = tmp_path / "out"
    bfs("get", img, "/sparse", out)
    assert out.read_bytes() == src.read_bytes()
    assert out.stat().st_blocks <= src.stat().st_blocks + 16      # holes recreated
    assert out.stat().st_blocks * 512 < MiB
    assert bfs("cat", img, "/sparse").out == src.read_bytes()
    assert_consistent(img)


def test_file_that_is_all_hole(bfs, img, tmp_path):
    src = tmp_path / "hole"
    _sparse_source(src, 5 * MiB, [])
    bfs("put", img, src, "/hole")
    st = stat_json(bfs, img, "/hole")
    assert st["size"] == 5 * MiB and st["extents"] == [] and st["sectors"] == 0
    out = tmp_path / "out"
    bfs("get", img, "/hole", out)
    assert out.stat().st_size == 5 * MiB and out.stat().st_blocks == 0
    assert bfs("cat", img, "/hole").out == bytes(5 * MiB)


def test_overwrite_with_put_grows_and_shrinks(bfs, img, tmp_path):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    a.write_bytes(data_of(300_000))
    b.write_bytes(data_of(2 * MiB + 3))
    c.write_bytes(b"tiny")
    bfs("put", img, a, "/f")
    inum = stat_json(bfs, img, "/f")["inum"]
    for src in (b, c, a, c):
        bfs("put", img, src, "/f")
        assert bfs("cat", img, "/f").out == src.read_bytes()
        st = stat_json(bfs, img, "/f")
        assert st["inum"] == inum and st["size"] == src.stat().st_size     # same file
        assert_consistent(img)
    # put into a directory replaces the file of the same name there
    bfs("mkdir", img, "/d")
    bfs("put", img, a, "/d/a")
    a.write_bytes(b"new contents of a")
    bfs("put", img, a, "/d")
    assert bfs("cat", img, "/d/a").out == b"new contents of a"
    assert [e["name"] for e in json.loads(bfs("ls", img, "/d", "--json").out)] == ["a"]
    # the space of the old contents is given back
    df = json.loads(bfs("df", img, "--json").out)
    assert df["data_types"]["user"]["bytes"] < 1 * MiB


def test_put_into_directory_and_cp_semantics(bfs, img, tmp_path):
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "f").write_bytes(b"f")
    (tree / "g").write_bytes(b"g")
    bfs("put", img, tree, "/copy", "-r")           # new name: a copy named /copy
    assert bfs("cat", img, "/copy/sub/f").out == b"f"
    bfs("mkdir", img, "/into")
    bfs("put", img, tree, "/into", "-r")           # existing dir: copied into it
    assert bfs("cat", img, "/into/tree/g").out == b"g"
    r = bfs("put", img, tree, "/x", check_rc=1)    # a directory without -r
    assert "use -r" in r.errtext


def test_put_follows_a_symlink_argument_only_without_r(bfs, img, tmp_path):
    """cp semantics: `put LINK` copies what the link points to (under the link's
    name when put into a directory); `put -r LINK` copies the link itself; a
    dangling link without -r is an error."""
    (tmp_path / "target").write_bytes(b"the target's bytes")
    link = tmp_path / "link"
    link.symlink_to("target")
    bfs("put", img, link, "/followed")
    assert bfs("cat", img, "/followed").out == b"the target's bytes"
    assert stat_json(bfs, img, "/followed")["type"] == "file"
    bfs("mkdir", img, "/d")
    bfs("put", img, link, "/d")
    assert names(bfs, img, "/d") == ["link"]
    assert bfs("cat", img, "/d/link").out == b"the target's bytes"
    bfs("put", img, link, "/kept", "-r")
    assert stat_json(bfs, img, "/kept")["type"] == "symlink"
    (tmp_path / "dangling").symlink_to("nowhere")
    r = bfs("put", img, tmp_path / "dangling", "/x", check_rc=6)   # as a missing source
    assert "No such file" in r.errtext and "Traceback" not in r.errtext
    assert_consistent(img)


# ---------------------------------------------------------------------- namespace


def names(bfs, img, path="/") -> list[str]:
    return [e["name"] for e in json.loads(bfs("ls", img, path, "--json").out)]


def test_mv_rename_move_and_replace(bfs, img, tmp_path):
    f1, f2 = tmp_path / "1", tmp_path / "2"
    f1.write_bytes(b"one" * 1000)
    f2.write_bytes(b"two" * 2000)
    bfs("put", img, f1, "/a")
    bfs("put", img, f2, "/b")
    bfs("mkdir", img, "/d")
    bfs("mv", img, "/a", "/a2")                    # rename
    assert names(bfs, img) == ["a2", "b", "d"]
    bfs("mv", img, "/a2", "/d")                    # into a directory
    assert names(bfs, img, "/d") == ["a2"]
    bfs("mv", img, "/d/a2", "/b")                  # over an existing file: replaced
    assert names(bfs, img) == ["b", "d"] and names(bfs, img, "/d") == []
    assert bfs("cat", img, "/b").out == f1.read_bytes()
    inodes = json.loads(bfs("dump", "usage", img, "--json").out)["inodes"]
    assert inodes == 3                              # /, /d, /b: the old /b is gone
    bfs("mkdir", img, "/d/e")
    bfs("mv", img, "/d", "/moved")                 # a directory with contents
    assert names(bfs, img, "/moved") == ["e"]
    assert stat_json(bfs, img, "/moved")["nlink"] == 3
    r = bfs("mv", img, "/moved", "/moved/e/x", check_rc=2)
    assert "into itself" in r.errtext
    bfs("mkdir", img, "/full")
    bfs("put", img, f1, "/full/f")
    bfs("mkdir", img, "/empty")
    r = bfs("mv", img, "/empty", "/full/f", check_rc=1)
    assert "non-directory" in r.errtext
    bfs("mv", img, "/moved/e", "/empty")           # existing dir: moved into it
    assert names(bfs, img, "/empty") == ["e"]
    r = bfs("mv", img, "/nope", "/x", check_rc=1)
    assert "no such file" in r.errtext
    assert_consistent(img)


def test_mv_directory_over_empty_and_nonempty_directory(bfs, img):
    for d in ("/a", "/a/x", "/b", "/c", "/c/y"):
        bfs("mkdir", img, d)
    from bfs_tools.errors import NotEmptyError
    from bfs_tools.fs.filesystem import Filesystem

    with Filesystem.open(str(img), write=True) as fs:
        root = fs.root()
        fs.rename(root, b"a", root, b"b")          # over an empty directory
        with pytest.raises(NotEmptyError):
            fs.rename(root, b"b", root, b"c")      # over a non-empty one
    assert names(bfs, img) == ["b", "c"]
    assert names(bfs, img, "/b") == ["x"]
    assert stat_json(bfs, img, "/")["nlink"] == 4
    assert_consistent(img)


def test_hard_links(bfs, img, tmp_path):
    src = tmp_path / "s"
    src.write_bytes(data_of(10_000))
    bfs("mkdir", img, "/d")
    bfs("put", img, src, "/f")
    bfs("ln", img, "/f", "/d/g")
    bfs("ln", img, "/f", "/h")
    st = stat_json(bfs, img, "/d/g")
    assert st["nlink"] == 3 and st["inum"] == stat_json(bfs, img, "/f")["inum"]
    assert bfs("cat", img, "/d/g").out == src.read_bytes()
    bfs("rm", img, "/f")
    assert stat_json(bfs, img, "/h")["nlink"] == 2
    assert bfs("cat", img, "/h").out == src.read_bytes()
    r = bfs("ln", img, "/d", "/dlink", check_rc=1)
    assert "directories" in r.errtext
    r = bfs("ln", img, "/h", "/d/g", check_rc=1)
    assert "exists" in r.errtext
    out = tmp_path / "out"
    bfs("get", img, "/", out, "-r")
    assert os.path.samefile(out / "h", out / "d" / "g")       # the link survives get
    assert (out / "h").stat().st_nlink == 2
    bfs("rm", img, "/h")
    bfs("rm", img, "/d/g")
    assert json.loads(bfs("dump", "usage", img, "--json").out)["inodes"] == 2
    assert_consistent(img)


def test_symlinks(bfs, img, tmp_path):
    src = tmp_path / "s"
    src.write_bytes(b"target contents")
    bfs("mkdir", img, "/d")
    bfs("put", img, src, "/d/file")
    bfs("ln", img, "file", "/d/rel", "-s")
    bfs("ln", img, "/d/file", "/abs", "-s")
    bfs("ln", img, "/d", "/dirlink", "-s")
    bfs("ln", img, "../nowhere", "/dangling", "-s")
    long_target = "x/" * 1000 + "y"
    bfs("ln", img, long_target, "/long", "-s")
    assert bfs("cat", img, "/d/rel").out == b"target contents"
    assert bfs("cat", img, "/abs").out == b"target contents"
    assert bfs("cat", img, "/dirlink/rel").out == b"target contents"   # through a dir link
    r = bfs("cat", img, "/dangling", check_rc=1)
    assert "no such file" in r.errtext
    st = stat_json(bfs, img, "/abs")
    assert st["type"] == "symlink" and st["size"] == len("/d/file")
    assert st["target"] == "/d/file"
    listing = {e["name"]: e for e in json.loads(bfs("ls", img, "/", "--json").out)}
    assert listing["dangling"]["target"] == "../nowhere"
    assert listing["long"]["target"] == long_target
    assert "abs -> /d/file" in bfs("ls", img, "/", "-l").text
    out = tmp_path / "out"
    bfs("get", img, "/", out, "-r")
    assert os.readlink(out / "d" / "rel") == "file" and os.readlink(out / "long") == long_target
    assert os.readlink(out / "dangling") == "../nowhere"
    r = bfs("ln", img, "t" * 4096, "/toolong", "-s", check_rc=1)
    assert "longer than" in r.errtext
    bfs("rm", img, "/dirlink")                     # rm removes the link, not the directory
    assert names(bfs, img, "/d") == ["file", "rel"]
    assert_consistent(img)


def test_rm_and_rm_r(bfs, img, tmp_path):
    src = tmp_path / "s"
    src.write_bytes(data_of(200_000))
    bfs("mkdir", img, "/a/b/c", "-p")
    for p in ("/a/f", "/a/b/f", "/a/b/c/f", "/top"):
        bfs("put", img, src, p)
    bfs("ln", img, "/a/b/c/f", "/keep")            # a link outside the removed tree
    used = json.loads(bfs("df", img, "--json").out)["used"]
    r = bfs("rm", img, "/a", check_rc=1)
    assert "is a directory" in r.errtext and "-r" in r.errtext
    bfs("rm", img, "/a", "-r")
    assert names(bfs, img) == ["keep", "top"]
    assert bfs("cat", img, "/keep").out == src.read_bytes()
    assert json.loads(bfs("df", img, "--json").out)["used"] < used
    bfs("rm", img, "/top")
    r = bfs("rm", img, "/top", check_rc=1)
    assert "no such file" in r.errtext
    r = bfs("rm", img, "/", "-r", check_rc=2)
    assert "refusing" in r.errtext
    assert stat_json(bfs, img, "/")["nlink"] == 2
    assert_consistent(img)


def test_mkdir_and_mkdir_p(bfs, img):
    bfs("mkdir", img, "/a")
    r = bfs("mkdir", img, "/a", check_rc=1)
    assert "exists" in r.errtext
    r = bfs("mkdir", img, "/x/y", check_rc=1)
    assert "no such file" in r.errtext
    bfs("mkdir", img, "/a/b/c/d", "-p")
    bfs("mkdir", img, "/a/b/c/d", "-p")            # exists: fine with -p
    bfs("mkdir", img, "/m", "-m", "700")
    assert stat_json(bfs, img, "/m")["mode"] == "40700"
    assert stat_json(bfs, img, "/a")["nlink"] == 3
    assert names(bfs, img, "/a/b/c") == ["d"]
    assert_consistent(img)


LS_LINE = re.compile(r"^[-dlcbps][-rwxsStT]{9} +\d+ \S+ +\S+ +(\d+|\d+, +\d+) "
                     r"[A-Z][a-z]{2} [ \d]\d ( \d{4}|\d\d:\d\d) (.+)$")


def test_ls_formats(bfs, img, tmp_path):
    src = tmp_path / "s"
    src.write_bytes(b"12345")
    src.chmod(0o640)
    bfs("mkdir", img, "/dir/sub", "-p")
    bfs("put", img, src, "/dir/file")
    bfs("ln", img, "file", "/dir/link", "-s")
    assert bfs("ls", img, "/dir").text == "file\nlink\nsub\n"
    lines = bfs("ls", img, "/dir", "-l").text.splitlines()
    assert len(lines) == 3
    for line in lines:
        assert LS_LINE.match(line), line
    assert lines[0].startswith("-rw") and " 5 " in lines[0] and lines[0].endswith(" file")
    assert lines[1].startswith("lrwxrwxrwx") and lines[1].endswith(" link -> file")
    assert lines[2].startswith("drwx") and lines[2].endswith(" sub")
    rec = bfs("ls", img, "/", "-R").text
    assert rec == "/:\ndir\n\n/dir:\nfile\nlink\nsub\n\n/dir/sub:\n"
    j = json.loads(bfs("ls", img, "/dir", "--json").out)
    f = j[0]
    assert (f["name"], f["type"], f["size"], f["nlink"], f["mode"]) == ("file", "file", 5, 1,
                                                                        "0640")
    assert {"inode", "uid", "gid", "mtime_ns", "mode_string", "subvolume", "snapshot"} <= set(f)
    jr = json.loads(bfs("ls", img, "/", "-R", "--json").out)
    assert [d["path"] for d in jr] == ["/", "/dir", "/dir/sub"]
    # ls of a file lists that file
    assert bfs("ls", img, "/dir/file").text == "file\n"
    assert LS_LINE.match(bfs("ls", img, "/dir/file", "-l").text.strip())
    r = bfs("ls", img, "/nope", check_rc=1)
    assert r.errtext.strip() == "bfs: error: /nope: no such file or directory"


def test_stat_text_and_json(bfs, img, tmp_path):
    src = tmp_path / "s"
    src.write_bytes(data_of(100_000))
    os.utime(src, ns=(1_500_000_000_111_111_111, 1_600_000_000_222_222_222))
    bfs("put", img, src, "/f")
    text = bfs("stat", img, "/f").text
    for needle in ("File: /f", "Size: 100000", "Links: 1", "Extents:", "Modify:"):
        assert needle in text, needle
    st = stat_json(bfs, img, "/f")
    assert st["path"] == "/f" and st["type"] == "file" and st["size"] == 100000
    assert st["subvolume"] == 1 and st["snapshot"] == 0xFFFFFFFF
    for e in st["extents"]:
        assert e["type"] == "extent" and not e["shared"]
        assert {"sector", "gen", "csum", "csum_type"} <= set(e["value"])
    st = stat_json(bfs, img, "/")
    assert st["type"] == "dir" and st["inum"] == 4096


def test_xattrs_and_owners_survive_put_and_get(bfs, img, tmp_path):
    src = tmp_path / "s"
    src.write_bytes(b"with attributes")
    os.setxattr(src, "user.comment", b"hello")
    os.setxattr(src, "user.bin", bytes(range(256)))
    d = tmp_path / "tree"
    d.mkdir()
    os.setxattr(d, "user.on-dir", b"yes")
    (d / "in").write_bytes(b"x")
    root = os.geteuid() == 0
    if root:
        os.setxattr(src, "trusted.t", b"root")
        os.chown(src, 1234, 5678)
        os.chown(d / "in", 42, 43)
    os.chmod(src, 0o640)
    bfs("put", img, src, "/f")
    bfs("put", img, d, "/tree", "-r")
    st = stat_json(bfs, img, "/f")
    assert st["xattrs"]["user.comment"] == b"hello".hex()
    assert st["xattrs"]["user.bin"] == bytes(range(256)).hex()
    assert stat_json(bfs, img, "/tree")["xattrs"] == {"user.on-dir": b"yes".hex()}
    assert int(st["mode"], 8) == stat.S_IFREG | 0o640
    if root:
        assert (st["uid"], st["gid"]) == (1234, 5678)
        assert st["xattrs"]["trusted.t"] == b"root".hex()
    out = tmp_path / "out"
    out.mkdir()
    bfs("get", img, "/f", out)
    bfs("get", img, "/tree", out, "-r")
    g = out / "f"
    assert os.getxattr(g, "user.comment") == b"hello"
    assert os.getxattr(g, "user.bin") == bytes(range(256))
    assert os.getxattr(out / "tree", "user.on-dir") == b"yes"
    assert stat.S_IMODE(g.stat().st_mode) == 0o640
    assert g.stat().st_mtime_ns == src.stat().st_mtime_ns
    if root:
        assert os.getxattr(g, "trusted.t") == b"root"
        assert (g.stat().st_uid, g.stat().st_gid) == (1234, 5678)
        assert ((out / "tree" / "in").stat().st_uid, (out / "tree" / "in").stat().st_gid) == (42, 43)


def test_get_into_existing_directory_and_overwrite(bfs, img, tmp_path):
    src = tmp_path / "s"
    src.write_bytes(b"v1")
    bfs("put", img, src, "/f")
    out = tmp_path / "out"
    out.mkdir()
    bfs("get", img, "/f", out)
    assert (out / "f").read_bytes() == b"v1"
    src.write_bytes(b"version 2")
    bfs("put", img, src, "/f")
    bfs("get", img, "/f", out / "f")               # an existing file is replaced
    assert (out / "f").read_bytes() == b"version 2"
    r = bfs("get", img, "/", out / "whole", check_rc=1)
    assert "use -r" in r.errtext
    bfs("get", img, "/", out / "whole", "-r")
    assert (out / "whole" / "f").read_bytes() == b"version 2"
    # into it again: a recursive get never overwrites what is on the host
    r = bfs("get", img, "/", out / "whole", "-r", check_rc=1)
    assert "/f: already exists on the host; skipped" in r.errtext


# ---------------------------------------------------------------------- checksums


@pytest.mark.damaged
def test_corrupted_data_is_detected_by_cat_and_get(bfs, img, tmp_path):
    src = tmp_path / "s"
    src.write_bytes(data_of(300_000))
    good = tmp_path / "good"
    good.write_bytes(b"untouched")
    bfs("put", img, src, "/victim")
    bfs("put", img, good, "/good")
    st = stat_json(bfs, img, "/victim")
    second = st["extents"][1]
    offset = (second["pos"]["offset"] - second["size"]) * 512      # file offset of extent 2
    sector = second["value"]["sector"] + second["value"]["offset"]
    flip_byte(img, sector * 512 + 123, 0x01)
    r = bfs("cat", img, "/victim", check_rc=3)
    assert f"/victim: data checksum mismatch at file offset {offset}" in r.errtext
    assert r.errtext.count("\n") == 1 and "Traceback" not in r.errtext
    assert len(r.out) <= offset                    # nothing after the bad extent is output
    out = tmp_path / "out"
    r = bfs("get", img, "/", out, "-r", check_rc=3)
    assert "/victim: data checksum mismatch" in r.errtext
    assert not (out / "victim").exists()           # no silently damaged copy
    assert (out / "good").read_bytes() == b"untouched"
    r = bfs("get", img, "/victim", tmp_path / "single", check_rc=3)
    assert not (tmp_path / "single").exists()
    assert bfs("cat", img, "/good").out == b"untouched"
    # reading the undamaged first extent still works
    from bfs_tools.fs.filesystem import Filesystem

    with Filesystem.open(str(img)) as fs:
        v = fs.resolve("/victim")
        assert fs.read(v.where, v.inode, 0, 1000, "/victim") == src.read_bytes()[:1000]


@pytest.mark.damaged
@pytest.mark.parametrize("which", ["first", "middle", "next run", "last"])
def test_cat_of_a_large_file_stops_exactly_at_a_bad_extent(bfs, img, tmp_path, which):
    """A large file streams in runs of 16 MiB whose checksums worker threads
    compute ahead of the output: a bad extent anywhere (first, inside the first
    run, in the next run, last) must still fail where the stream reaches it,
    with every byte before it output."""
    src = tmp_path / "s"
    data = data_of(20 << 20, seed=3)
    src.write_bytes(data)
    bfs("put", img, src, "/big")
    assert bfs("cat", img, "/big").out == data
    ext = stat_json(bfs, img, "/big")["extents"]
    assert len(ext) >= 16
    bad = {"first": ext[0], "middle": ext[len(ext) // 3], "next run": ext[len(ext) * 7 // 8],
           "last": ext[-1]}[which]
    offset = (bad["pos"]["offset"] - bad["size"]) * 512
    flip_byte(img, (bad["value"]["sector"] + bad["value"]["offset"]) * 512 + 4000, 0x80)
    r = bfs("cat", img, "/big", check_rc=3)
    assert f"/big: data checksum mismatch at file offset {offset}" in r.errtext
    assert r.out == data[:offset]
