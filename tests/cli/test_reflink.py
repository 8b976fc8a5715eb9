"""Reflink and cp, modelled on xfstests' clone group.

generic/110 (reflink, reflink the reflink, modify each version, md5 of every
version after each step), generic/111 (directory trees), generic/115 (move and
delete reflinked files), generic/134 (the last unaligned block), generic/157
(invalid requests), generic/175 scaled (one block shared 10,000 times, then every
copy deleted: the space comes back exactly), plus snapshots, sparse files,
inline data, partial ranges and refcount overflow.

After every step `check_reflink` recomputes every indirect key's refcount from
all reflink_p keys in all snapshots (padded ranges), checks every reflink_p is
backed, the reflink accounting counters and each user bucket's live sectors
(extents + reflink_v). conftest runs `bfs check -n` after each test too.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import random
import stat
from collections import Counter

import pytest
from bfs_tools.formats.constants import REFLINK_REFCOUNT_MAX
from bfs_tools.formats.ids import AccountingType, BtreeId, DataType, KeyType

from bfs_tools.alloc.accounting import decode_counters, read_counters
from bfs_tools.alloc.alloc_key import decode_alloc
from bfs_tools.extents import decode_extent
from bfs_tools.fs.filesystem import Filesystem
from bfs_tools.reflink import decode_reflink_p, decode_reflink_v, padded_range, refcount_of
from bfs_tools.store import Store

BLOCK = 4096
MiB = 1 << 20


def data_of(size: int, seed: int = 0) -> bytes:
    return random.Random(size * 7919 + seed).randbytes(size)


def md5(b: bytes) -> str:
    return hashlib.md5(b).hexdigest()


@pytest.fixture
def img(formatted):
    return formatted("64M")


# ---------------------------------------------------------------------- checks


def check_reflink(img) -> dict:
    """Recompute refcounts and space from scratch and compare with the image.
    Returns a summary: indirect keys, reflink_p keys, user sectors and buckets."""
    store = Store.open(str(img))
    try:
        bt = store.btrees
        vs = list(bt.iter(BtreeId.reflink))
        ps = [k for k in bt.iter(BtreeId.extents) if k.type == KeyType.reflink_p]
        starts = [v.start for v in vs]
        ends = [v.end for v in vs]
        for a, b in zip(vs, vs[1:], strict=False):
            assert a.end <= b.start, f"indirect keys overlap: {a} {b}"
        refs: Counter = Counter()
        for p in ps:
            lo, hi = padded_range(p)
            i = bisect.bisect_right(ends, lo)
            while i < len(vs) and starts[i] < hi:
                refs[i] += 1
                i += 1
            # the pointer's own range is backed, without gaps
            idx = decode_reflink_p(p.val).idx
            at = idx
            i = bisect.bisect_right(ends, idx)
            while at < idx + p.size:
                assert i < len(vs) and starts[i] <= at, f"{p}: index {at} not backed"
                at = ends[i]
                i += 1
        for i, v in enumerate(vs):
            assert v.type in (KeyType.reflink_v, KeyType.indirect_inline_data), v
            assert refcount_of(v) == refs[i] and refs[i] > 0, (
                f"indirect key {v.pos}: refcount {refcount_of(v)}, reflink_p keys say {refs[i]}")
        ind, refd = read_counters(bt, AccountingType.reflink)
        assert ind == sum(v.size for v in vs if v.type == KeyType.reflink_v)
        assert refd == sum(p.size for p in ps)
        # each user bucket's live sectors = the extents and indirect extents in it
        bucket_sectors = store.sb.bucket_size // 512
        live: Counter = Counter()
        for k in bt.iter(BtreeId.extents):
            if k.type == KeyType.extent:
                live[decode_extent(k.val).sector // bucket_sectors] += k.size
        for v in vs:
            if v.type == KeyType.reflink_v:
                live[decode_reflink_v(v.val).extent.sector // bucket_sectors] += v.size
        alloc = {k.pos[1]: decode_alloc(k) for k in bt.iter(BtreeId.alloc)}
        user = {b: a.dirty_sectors for b, a in alloc.items() if a.data_type == DataType.user}
        assert user == {b: n for b, n in live.items() if n}, "user buckets differ from the keys"
        return {"indirect": len(vs), "pointers": len(ps), "user_sectors": sum(user.values()),
                "user_buckets": len(user)}
    finally:
        store.close()


def space(img) -> dict:
    """The accounting counters that data changes move (not the btree nodes')."""
    store = Store.open(str(img))
    try:
        out = {}
        for k in store.btrees.iter(BtreeId.accounting):
            if k.pos[0] in (AccountingType.btree,) or (
                    k.pos[0] == AccountingType.data_type and k.pos[1] == DataType.btree):
                continue
            out[k.pos] = decode_counters(k.val)
        return out
    finally:
        store.close()


def cat(bfs, img, path) -> bytes:
    return bfs("cat", img, path).out


def put(bfs, img, tmp_path, path: str, data: bytes) -> None:
    src = tmp_path / "put-src"
    src.write_bytes(data)
    bfs("put", img, src, path)


def api_write(img, path: str, offset: int, data: bytes) -> None:
    with Filesystem.open(str(img), write=True) as fs:
        fs.write(fs.resolve(path).where, offset, data, path)


def api_truncate(img, path: str, size: int) -> None:
    with Filesystem.open(str(img), write=True) as fs:
        fs.truncate(fs.resolve(path).where, size, path)


def stat_json(bfs, img, path) -> dict:
    return json.loads(bfs("stat", img, path, "--json").out)


def shared_ranges(bfs, img, path) -> list[bool]:
    return [e["shared"] for e in stat_json(bfs, img, path)["extents"]]


# ---------------------------------------------------------------------- generic/110


def test_reflink_reflink_modify_each(bfs, img, tmp_path):
    """Reflink, reflink the reflink, modify the original and each copy: every
    version keeps its own bytes, refcounts and space exact after each step."""
    orig = data_of(MiB + 7)
    put(bfs, img, tmp_path, "/file1", orig)
    before = check_reflink(img)
    bfs("reflink", img, "/file1", "/file2")
    bfs("reflink", img, "/file2", "/file3")
    want = {"/file1": bytearray(orig), "/file2": bytearray(orig), "/file3": bytearray(orig)}

    def verify():
        for p, d in want.items():
            assert md5(cat(bfs, img, p)) == md5(bytes(d)), p
        return check_reflink(img)

    s = verify()
    assert s["user_sectors"] == before["user_sectors"], "sharing must not use more space"
    assert all(shared_ranges(bfs, img, "/file3"))
    assert stat_json(bfs, img, "/file2")["size"] == len(orig)
    # modify the original, then each copy, at different places
    for i, (path, off) in enumerate((("/file1", 0), ("/file2", 300 * 1024 + 5),
                                     ("/file3", MiB - 10))):
        patch = bytes([0x41 + i]) * 9000
        api_write(img, path, off, patch)
        want[path][off:off + len(patch)] = patch
        verify()
    # the unmodified middle of file3 is still shared with file1/file2
    assert any(shared_ranges(bfs, img, "/file3"))
    for p in list(want):
        bfs("rm", img, p)
        del want[p]
        s = verify()
    assert s == {"indirect": 0, "pointers": 0, "user_sectors": 0, "user_buckets": 0}


def test_partial_range_from_middle_of_extent(bfs, img, tmp_path):
    orig = data_of(600 * 1024, 1)
    put(bfs, img, tmp_path, "/src", orig)
    put(bfs, img, tmp_path, "/dst", data_of(100 * 1024, 2))
    # 3 blocks from the middle of the source's first extent, to offset 40k of dst
    bfs("reflink", img, "/src", "/dst", "--src-offset", "20k", "--dst-offset", "40k",
        "--length", "12k")
    want = bytearray(data_of(100 * 1024, 2))
    want[40 * 1024:52 * 1024] = orig[20 * 1024:32 * 1024]
    assert cat(bfs, img, "/dst") == bytes(want)
    assert cat(bfs, img, "/src") == orig
    check_reflink(img)
    # again from a range that now straddles shared and unshared data
    bfs("reflink", img, "/src", "/dst", "--src-offset", "16k", "--dst-offset", "0",
        "--length", "64k")
    want[0:64 * 1024] = orig[16 * 1024:80 * 1024]
    assert cat(bfs, img, "/dst") == bytes(want)
    check_reflink(img)
    # destination grows to cover a range past its end; the gap is a hole
    bfs("reflink", img, "/src", "/dst", "--src-offset", "0", "--dst-offset", "200k",
        "--length", "8k")
    want += bytes(200 * 1024 - len(want)) + orig[:8 * 1024]
    assert cat(bfs, img, "/dst") == bytes(want)
    assert stat_json(bfs, img, "/dst")["size"] == 208 * 1024
    check_reflink(img)
    # same file, ranges apart
    bfs("reflink", img, "/src", "/src", "--src-offset", "0", "--dst-offset", "512k",
        "--length", "64k")
    orig = orig[:512 * 1024] + orig[:64 * 1024] + orig[576 * 1024:]
    assert cat(bfs, img, "/src") == orig
    check_reflink(img)


def test_sparse_holes_stay_holes(bfs, img, tmp_path):
    host = tmp_path / "sparse"
    with open(host, "wb") as f:
        f.truncate(3 * MiB)
        f.seek(MiB)
        f.write(data_of(5000, 3))
        f.seek(2 * MiB + 8192)
        f.write(data_of(70000, 4))
    bfs("put", img, host, "/sparse")
    bfs("reflink", img, "/sparse", "/copy")
    assert cat(bfs, img, "/copy") == host.read_bytes()
    for p in ("/sparse", "/copy"):
        st = stat_json(bfs, img, p)
        covered = sum(e["size"] for e in st["extents"]) * 512
        assert covered < 200 * 1024, "holes must stay holes"
        assert st["extents"][0]["pos"]["offset"] * 512 > MiB
    # a range made only of a hole punches a hole in the destination
    put(bfs, img, tmp_path, "/full", data_of(128 * 1024, 5))
    bfs("reflink", img, "/sparse", "/full", "--src-offset", "0", "--dst-offset", "0",
        "--length", "64k")
    assert cat(bfs, img, "/full") == bytes(64 * 1024) + data_of(128 * 1024, 5)[64 * 1024:]
    assert stat_json(bfs, img, "/full")["extents"][0]["pos"]["offset"] * 512 > 64 * 1024
    check_reflink(img)


def test_inline_data(bfs, img, tmp_path):
    put(bfs, img, tmp_path, "/small", b"tiny file\n")
    bfs("reflink", img, "/small", "/small2")
    assert cat(bfs, img, "/small2") == b"tiny file\n"
    out = bfs("dump", "btree", img, "reflink").text
    assert "indirect_inline_data" in out
    check_reflink(img)
    api_write(img, "/small2", 0, b"TINY")
    assert cat(bfs, img, "/small") == b"tiny file\n"
    assert cat(bfs, img, "/small2") == b"TINY file\n"
    check_reflink(img)
    bfs("rm", img, "/small")
    bfs("rm", img, "/small2")
    assert check_reflink(img)["indirect"] == 0


def test_truncate_and_rewrite_drop_references(bfs, img, tmp_path):
    orig = data_of(2 * MiB, 6)
    put(bfs, img, tmp_path, "/a", orig)
    before = check_reflink(img)
    bfs("reflink", img, "/a", "/b")
    api_truncate(img, "/a", 100 * 1024 + 3)
    assert cat(bfs, img, "/a") == orig[:100 * 1024 + 3]
    assert cat(bfs, img, "/b") == orig
    s = check_reflink(img)
    assert s["user_sectors"] == before["user_sectors"] + 8   # a's new partial block
    api_truncate(img, "/b", 0)
    s = check_reflink(img)
    # only what a still maps survives: its shared first 100 KiB (+ its own tail block)
    assert s["user_sectors"] <= 200 + 8 + 256
    put(bfs, img, tmp_path, "/a", b"x" * 10000)     # put over: replaces all of a's data
    assert check_reflink(img)["indirect"] == 0


# ---------------------------------------------------------------------- generic/111, cp


def _tree(root):
    os.makedirs(root / "d1" / "d2")
    (root / "big").write_bytes(data_of(700 * 1024, 10))
    (root / "small").write_bytes(b"small\n")
    (root / "d1" / "f").write_bytes(data_of(9000, 11))
    (root / "d1" / "d2" / "g").write_bytes(data_of(300 * 1024 + 1, 12))
    os.link(root / "d1" / "f", root / "d1" / "d2" / "f-link")
    os.symlink("d1/f", root / "rel-link")
    os.symlink("/nowhere", root / "dangling")
    os.mkfifo(root / "fifo")
    os.chmod(root / "small", 0o640)
    os.setxattr(root / "big", "user.note", b"shared")
    os.setxattr(root / "d1", "user.dir", b"on a dir")
    for p in [*root.rglob("*"), root]:
        os.utime(p, ns=(1_600_000_000_123_456_789, 1_500_000_000_987_654_321),
                 follow_symlinks=False)


def describe(img, path: str) -> dict:
    """{relative path: (type, mode, uid, gid, size, atime, mtime, md5, target, xattrs, link id)}"""
    out = {}
    with Filesystem.open(str(img)) as fs:
        top = fs.resolve(path, follow=False)
        stack = [(b"", top.where, top.inode)]
        inums: dict[int, int] = {}
        while stack:
            rel, where, ino = stack.pop()
            data = None
            if ino.is_reg or ino.is_lnk:
                data = fs.read_all(where, ino, rel.decode())
            xattrs = {x.full_name: x.value for x in fs.listxattr(where)}
            link = inums.setdefault(where.inum, len(inums)) if ino.nlink > 1 and not ino.is_dir \
                else None
            out[rel] = (stat.S_IFMT(ino.mode), stat.S_IMODE(ino.mode), ino.uid, ino.gid,
                        ino.size if not ino.is_dir else 0, (ino.atime_sec, ino.atime_nsec),
                        (ino.mtime_sec, ino.mtime_nsec), data and md5(data), xattrs, link,
                        ino.nlink if not ino.is_dir else None)
            if ino.is_dir:
                for e in fs.readdir(where):
                    stack.append((rel + b"/" + e.name, e.where, fs.inode(e.where)))
    return out


@pytest.mark.parametrize("mode", ["auto", "always", "never"])
def test_cp_tree(bfs, img, tmp_path, mode):
    """cp -r: every type, metadata like cp -a, hard links inside the tree; the data
    is shared unless --reflink=never; modifying the copy leaves the original."""
    host = tmp_path / "tree"
    _tree(host)
    bfs("put", img, host, "/src", "-r")
    before = check_reflink(img)
    args = [] if mode == "auto" else [f"--reflink={mode}"]
    bfs("cp", img, "/src", "/dst", "-r", *args)
    assert describe(img, "/dst") == describe(img, "/src")
    s = check_reflink(img)
    if mode == "never":
        assert s["pointers"] == 0 and s["user_sectors"] > 1.9 * before["user_sectors"]
    else:
        assert s["user_sectors"] == before["user_sectors"]
        assert all(shared_ranges(bfs, img, "/dst/big"))
    # into an existing directory: /dst/src
    bfs("cp", img, "/src", "/dst", "-r", *args)
    assert describe(img, "/dst/src") == describe(img, "/src")
    # modify the copies; the originals do not change
    src_view = describe(img, "/src")
    api_write(img, "/dst/big", 4096, b"changed" * 1000)
    api_write(img, "/dst/d1/f", 0, b"F")          # a hard link: both names change
    assert describe(img, "/src") == src_view
    assert cat(bfs, img, "/dst/d1/d2/f-link")[:1] == b"F"
    assert cat(bfs, img, "/dst/src/d1/f")[:1] != b"F"
    check_reflink(img)
    bfs("rm", img, "/src", "-r")
    assert describe(img, "/dst/src")[b"/big"][7] == md5(data_of(700 * 1024, 10))
    bfs("rm", img, "/dst", "-r")
    s = check_reflink(img)
    assert s["indirect"] == 0 and s["user_sectors"] == 0


def test_cp_tree_of_copies(bfs, img, tmp_path):
    """A copy of a copy references the indirect keys again (pads and all), also
    for files that mix shared and unshared data and for pointers into the middle
    of indirect keys; refcounts stay exact and everything goes when deleted."""
    host = tmp_path / "tree"
    _tree(host)
    bfs("put", img, host, "/src", "-r")
    bfs("cp", img, "/src", "/c1", "-r")
    api_write(img, "/src/big", 8192, b"new" * 3000)           # shared, own, shared
    api_write(img, "/c1/d1/d2/g", 300 * 1024, b"tail")        # the copy's own tail
    bfs("reflink", img, "/src/d1/d2/g", "/c1/small", "--src-offset", "4096",
        "--dst-offset", "0", "--length", "8192")            # padded: inside an indirect key
    check_reflink(img)
    for src, dst in (("/c1", "/c2"), ("/src", "/s2"), ("/c2", "/c3")):
        view = describe(img, src)
        bfs("cp", img, src, dst, "-r", "--reflink=always")
        assert describe(img, dst) == view == describe(img, src)
        check_reflink(img)
    assert cat(bfs, img, "/c3/small") == data_of(300 * 1024 + 1, 12)[4096:4096 + 8192]
    for p in ("/src", "/c1", "/c2", "/s2", "/c3"):
        bfs("rm", img, p, "-r")
    s = check_reflink(img)
    assert s["indirect"] == 0 and s["user_sectors"] == 0


def test_cp_file_cases(bfs, img, tmp_path):
    put(bfs, img, tmp_path, "/f", data_of(50000, 20))
    bfs("mkdir", img, "/d")
    bfs("cp", img, "/f", "/d")                       # into a directory
    assert cat(bfs, img, "/d/f") == data_of(50000, 20)
    put(bfs, img, tmp_path, "/g", data_of(300000, 21))
    bfs("cp", img, "/f", "/g")                       # over an existing file: replaced
    assert cat(bfs, img, "/g") == data_of(50000, 20)
    assert stat_json(bfs, img, "/g")["size"] == 50000
    check_reflink(img)
    r = bfs("cp", img, "/d", "/e", check_rc=1)        # a directory without -r
    assert "use -r" in r.errtext
    r = bfs("cp", img, "/f", "/f", check_rc=None)
    assert r.rc != 0 and "same file" in r.errtext
    r = bfs("cp", img, "/d", "/d/sub", "-r", check_rc=None)
    assert r.rc != 0 and "into itself" in r.errtext
    r = bfs("cp", img, "/missing", "/x", check_rc=1)
    assert "no such file" in r.errtext
    bfs("cp", img, "/d", "/f", "-r", check_rc=1)      # a directory over a file
    bfs("cp", img, "/f", "/d2/x", check_rc=1)         # missing parent
    check_reflink(img)


# ---------------------------------------------------------------------- generic/115


def test_move_and_delete_reflinked_files(bfs, img, tmp_path):
    orig = data_of(400 * 1024, 30)
    empty = space(img)
    put(bfs, img, tmp_path, "/a", orig)
    bfs("mkdir", img, "/dir")
    for i in range(4):
        bfs("reflink", img, "/a", f"/dir/c{i}")
    bfs("mv", img, "/dir/c0", "/moved")
    bfs("mv", img, "/dir", "/dir2")
    bfs("mv", img, "/a", "/dir2/a")
    for p in ("/moved", "/dir2/c1", "/dir2/c3", "/dir2/a"):
        assert md5(cat(bfs, img, p)) == md5(orig)
    s = check_reflink(img)
    assert s["indirect"] > 0
    bfs("rm", img, "/dir2/a")                    # the original goes; the copies stay
    for p in ("/moved", "/dir2/c1", "/dir2/c2"):
        assert md5(cat(bfs, img, p)) == md5(orig)
    check_reflink(img)
    bfs("rm", img, "/dir2", "-r")
    bfs("rm", img, "/moved")
    assert check_reflink(img)["user_sectors"] == 0
    # every data, snapshot, reflink and inode counter is back to the empty image's
    assert {p: c for p, c in space(img).items() if any(c)} == \
        {p: c for p, c in empty.items() if any(c)}


# ---------------------------------------------------------------------- generic/134


def test_last_unaligned_block(bfs, img, tmp_path):
    orig = data_of(3 * BLOCK + 1234, 40)
    put(bfs, img, tmp_path, "/a", orig)
    bfs("reflink", img, "/a", "/b")                     # whole file: size exact
    assert cat(bfs, img, "/b") == orig
    assert stat_json(bfs, img, "/b")["size"] == len(orig)
    # the unaligned tail alone, ending at EOF, onto the end of another file
    put(bfs, img, tmp_path, "/c", data_of(2 * BLOCK, 41))
    bfs("reflink", img, "/a", "/c", "--src-offset", str(3 * BLOCK), "--dst-offset",
        str(2 * BLOCK), "--length", "1234")
    assert cat(bfs, img, "/c") == data_of(2 * BLOCK, 41) + orig[3 * BLOCK:]
    assert stat_json(bfs, img, "/c")["size"] == 2 * BLOCK + 1234
    # ... but not into the middle of a file (its last block would clobber data)
    put(bfs, img, tmp_path, "/d", data_of(4 * BLOCK, 42))
    r = bfs("reflink", img, "/a", "/d", "--src-offset", str(3 * BLOCK), "--dst-offset", "0",
            "--length", "1234", check_rc=1)
    assert "middle" in r.errtext
    # an unaligned length that does not end at EOF
    r = bfs("reflink", img, "/a", "/d", "--length", "1000", check_rc=1)
    assert "multiple of the block size" in r.errtext
    assert cat(bfs, img, "/d") == data_of(4 * BLOCK, 42)
    # the copy of the tail reads zeros after EOF when the file grows
    api_write(img, "/c", 2 * BLOCK + 1234 + 100, b"Z")
    assert cat(bfs, img, "/c") == (data_of(2 * BLOCK, 41) + orig[3 * BLOCK:] + bytes(100)
                                   + b"Z")
    assert cat(bfs, img, "/a") == orig
    check_reflink(img)


# ---------------------------------------------------------------------- generic/157, bad input


def test_invalid_requests(bfs, img, tmp_path):
    put(bfs, img, tmp_path, "/a", data_of(64 * 1024, 50))
    put(bfs, img, tmp_path, "/b", data_of(64 * 1024, 51))
    bfs("mkdir", img, "/dir")
    snap = bfs("dump", "btree", img, "extents").out + bfs("dump", "btree", img, "reflink").out
    cases = [
        (["/missing", "/x"], "no such file"),                        # source missing
        (["/dir", "/x"], "is a directory"),                          # source a directory
        (["/a", "/dir"], "is a directory"),                          # destination a directory
        (["/a", "/a", "--src-offset", "0", "--dst-offset", "32k", "--length", "64k"],
         "overlap"),                                                 # same file, overlapping
        (["/a", "/a"], "overlap"),                                   # whole file onto itself
        (["/a", "/b", "--src-offset", "100"], "multiples of the block size"),
        (["/a", "/b", "--dst-offset", "4097", "--length", "4k"], "multiples of the block size"),
        (["/a", "/b", "--length", "68k"], "beyond the end"),         # length past EOF
        (["/a", "/b", "--src-offset", "128k"], "beyond the end"),     # offset past EOF
        (["/a", "/nodir/x"], "no such file"),
    ]
    for args, msg in cases:
        r = bfs("reflink", img, *args, check_rc=None)
        assert r.rc == 1, (args, r)
        assert msg in r.errtext and r.errtext.startswith("bfs: error:"), (args, r.errtext)
        assert "Traceback" not in r.errtext
    assert bfs("reflink", img, "/a", "/b", "--length", "lots", check_rc=2).rc == 2
    after = bfs("dump", "btree", img, "extents").out + bfs("dump", "btree", img, "reflink").out
    assert after == snap, "a refused request must change nothing"
    r = bfs("reflink", img, "/a", "/b", "--src-offset", "64k")    # zero bytes at EOF: fine
    check_reflink(img)


def test_across_images_refused(formatted, tmp_path):
    from bfs_tools.errors import CrossDeviceError
    from bfs_tools.remap import reflink_paths

    a, b = formatted("16M"), formatted("16M")
    fa = Filesystem.open(str(a), write=True)
    fb = Filesystem.open(str(b), write=True)
    try:
        fa.create(fa.root(), b"f", stat.S_IFREG | 0o644, data=b"x" * 5000)
        with pytest.raises(CrossDeviceError):
            reflink_paths(fa, "/f", "/g", dst_fs=fb)
    finally:
        fa.close()
        fb.close()


def test_refcount_overflow_guarded(bfs, img, tmp_path):
    put(bfs, img, tmp_path, "/a", data_of(20000, 60))
    bfs("reflink", img, "/a", "/b")
    with Store.open(str(img), write=True) as s:
        t = s.transaction()
        from bfs_tools.reflink import with_refcount

        for v in list(s.btrees.iter(BtreeId.reflink)):
            t.update(BtreeId.reflink, with_refcount(v, REFLINK_REFCOUNT_MAX))
        t.commit(run_triggers=False)
    snap = [bfs("dump", "btree", img, b).out for b in ("extents", "reflink", "inodes",
                                                       "dirents")]
    r = bfs("reflink", img, "/a", "/c", check_rc=1)
    assert "refcount would exceed" in r.errtext
    r = bfs("cp", img, "/b", "/c", "--reflink=always", check_rc=1)
    assert "refcount would exceed" in r.errtext
    assert [bfs("dump", "btree", img, b).out for b in ("extents", "reflink", "inodes",
                                                       "dirents")] == snap
    # auto falls back to copying
    bfs("cp", img, "/b", "/c")
    assert cat(bfs, img, "/c") == data_of(20000, 60)
    assert not any(shared_ranges(bfs, img, "/c"))
    with Store.open(str(img), write=True) as s:
        t = s.transaction()
        from bfs_tools.reflink import with_refcount

        for v in list(s.btrees.iter(BtreeId.reflink)):
            t.update(BtreeId.reflink, with_refcount(v, 2))
        t.commit(run_triggers=False)
    check_reflink(img)


# ---------------------------------------------------------------------- generic/175, scaled


def test_one_block_shared_10000_times(bfs, formatted, tmp_path):
    """One block reflinked 10,000 times (one transaction through the API), then
    every copy deleted: the counters come back to their values before."""
    from bfs_tools.remap import Remapper, commit

    img = formatted("256M")
    put(bfs, img, tmp_path, "/one", data_of(BLOCK, 70))
    before = space(img)
    n = 10_000
    with Filesystem.open(str(img), write=True) as fs:
        t = fs.store.transaction()
        root = fs.root()
        src = fs.resolve("/one", src=t)
        fs.create(root, b"d", stat.S_IFDIR | 0o755, trans=t)
        d = fs.resolve("/d", src=t).where
        r = Remapper(fs, t)
        for i in range(n):
            w = fs.create(d, b"c%05d" % i, stat.S_IFREG | 0o644, trans=t, touch_parent=False)
            ino = fs.inode(w, t)
            r.remap(src.where, src.inode, 0, w, ino, 0, 0, to_eof=True, fresh=True,
                    dst_checked=True)
            fs.put_inode(t, w, ino)
        commit(t)
    s = check_reflink(img)
    assert s["indirect"] == 1 and s["pointers"] == n + 1
    with Store.open(str(img)) as st:
        v = next(iter(st.btrees.iter(BtreeId.reflink)))
        assert refcount_of(v) == n + 1
    assert md5(cat(bfs, img, "/d/c09999")) == md5(data_of(BLOCK, 70))
    bfs("rm", img, "/d", "-r")
    bfs("rm", img, "/one")
    s = check_reflink(img)
    assert s == {"indirect": 0, "pointers": 0, "user_sectors": 0, "user_buckets": 0}
    after = space(img)
    after.pop((AccountingType.nr_inodes, 0, 0), None)
    before.pop((AccountingType.nr_inodes, 0, 0), None)
    # the file's own sectors went too; everything else is back to before
    assert {p: c for p, c in after.items() if any(c)} == {
        p: c for p, c in before.items() if p[0] not in (AccountingType.snapshot,)
        and not (p[0] == AccountingType.data_type and p[1] == DataType.user)}


# ---------------------------------------------------------------------- snapshots


def _have_snapshots() -> bool:
    from bfs_tools.cli.main import COMMANDS

    return "snapshot" in COMMANDS


needs_snapshots = pytest.mark.skipif(not _have_snapshots(), reason="snapshots not available")


@needs_snapshots
def test_reflink_in_snapshots(bfs, img, tmp_path):
    orig = data_of(300 * 1024, 80)
    bfs("subvolume", "create", img, "/sv")
    put(bfs, img, tmp_path, "/sv/a", orig)
    bfs("snapshot", "create", img, "/sv", "/snap")
    bfs("snapshot", "create", img, "/sv", "/ro", "--read-only")
    # inside a snapshot: the source's keys belong to the ancestor snapshot
    bfs("reflink", img, "/snap/a", "/snap/b")
    check_reflink(img)
    # the same file seen from the other snapshots did not change
    for p in ("/sv/a", "/snap/a", "/snap/b", "/ro/a"):
        assert cat(bfs, img, p) == orig, p
    # modify each side
    api_write(img, "/snap/a", 8192, b"S" * 5000)
    api_write(img, "/sv/a", 0, b"V" * 100)
    check_reflink(img)
    assert cat(bfs, img, "/snap/b") == orig
    assert cat(bfs, img, "/ro/a") == orig
    assert cat(bfs, img, "/sv/a")[:100] == b"V" * 100
    # reflink across subvolumes, from a read-only snapshot (left as it is)
    ro_keys = [k for k in bfs("dump", "btree", img, "extents").text.splitlines()]
    bfs("reflink", img, "/ro/a", "/sv/from-ro")
    assert cat(bfs, img, "/sv/from-ro") == orig
    new_keys = bfs("dump", "btree", img, "extents").text.splitlines()
    assert set(ro_keys) <= set(new_keys), "the read-only snapshot's keys must not change"
    check_reflink(img)
    # a read-only snapshot cannot be a destination
    r = bfs("reflink", img, "/sv/a", "/ro/new", check_rc=1)
    assert "read-only" in r.errtext
    r = bfs("reflink", img, "/sv/a", "/ro/a", check_rc=1)
    assert "read-only" in r.errtext
    r = bfs("cp", img, "/sv/a", "/ro/x", check_rc=1)
    assert "read-only" in r.errtext
    check_reflink(img)


@needs_snapshots
def test_reflink_of_data_rewritten_in_a_snapshot(bfs, img, tmp_path):
    """The source snapshot's own keys hide (and coincide with) its ancestor's
    keys: converting them must keep the extents btree's snapshot invariant
    (regression: merged reflink_p over several hidden ancestor keys made the
    source read the ancestor's old data)."""
    old, new = data_of(600_000, 82), data_of(600_000, 83)
    bfs("subvolume", "create", img, "/sv")
    put(bfs, img, tmp_path, "/sv/a", old)
    bfs("snapshot", "create", img, "/sv", "/snap")
    put(bfs, img, tmp_path, "/sv/a", new)                 # rewritten whole in /sv
    api_write(img, "/snap/a", 70_000, b"s" * 9000)        # and partly in /snap
    bfs("reflink", img, "/sv/a", "/sv/b")
    bfs("reflink", img, "/snap/a", "/snap/b", "--src-offset", "64k", "--length", "256k")
    bfs("reflink", img, "/sv/b", "/sv/c")
    snap_a = bytearray(old)
    snap_a[70_000:79_000] = b"s" * 9000
    for p, want in (("/sv/a", new), ("/sv/b", new), ("/sv/c", new), ("/snap/a", snap_a),
                    ("/snap/b", snap_a[64 * 1024:320 * 1024])):
        assert cat(bfs, img, p) == bytes(want), p
    check_reflink(img)
    api_write(img, "/sv/b", 100_000, b"b" * 5000)
    assert cat(bfs, img, "/sv/a") == new and cat(bfs, img, "/sv/c") == new
    bfs("snapshot", "delete", img, "/snap")
    assert cat(bfs, img, "/sv/a") == new
    check_reflink(img)


@needs_snapshots
def test_snapshot_of_reflinked_files(bfs, img, tmp_path):
    orig = data_of(500 * 1024, 81)
    bfs("subvolume", "create", img, "/sv")
    put(bfs, img, tmp_path, "/sv/a", orig)
    bfs("reflink", img, "/sv/a", "/sv/b")
    s0 = check_reflink(img)
    bfs("snapshot", "create", img, "/sv", "/snap")
    # a reflink_p visible in several snapshots counts once: nothing changed
    assert check_reflink(img) == s0
    api_write(img, "/sv/b", 0, b"B" * 10000)
    bfs("rm", img, "/snap/a")
    check_reflink(img)
    assert cat(bfs, img, "/snap/b") == orig
    assert cat(bfs, img, "/sv/a") == orig
    bfs("reflink", img, "/snap/b", "/snap/c")          # reference the reflink_p again
    assert cat(bfs, img, "/snap/c") == orig
    check_reflink(img)
    bfs("snapshot", "delete", img, "/snap")
    check_reflink(img)
    assert cat(bfs, img, "/sv/a") == orig
    bfs("rm", img, "/sv/a")
    bfs("rm", img, "/sv/b")
    check_reflink(img)


@needs_snapshots
def test_cp_tree_across_snapshots(bfs, img, tmp_path):
    """cp -r reads the whole source before writing: from a snapshot whose keys an
    ancestor owns (rewritten at the snapshot only), from a read-only snapshot
    (left as it is), and through subvolumes into a subvolume inside the tree
    being copied (the copy does not contain itself)."""
    host = tmp_path / "tree"
    _tree(host)
    bfs("subvolume", "create", img, "/sv")
    bfs("put", img, host, "/sv/t", "-r")
    bfs("snapshot", "create", img, "/sv", "/snap")
    bfs("snapshot", "create", img, "/sv", "/ro", "--read-only")
    sv_view = describe(img, "/sv/t")
    old_keys = set(bfs("dump", "btree", img, "extents").text.splitlines())
    bfs("cp", img, "/snap/t", "/snap/t2", "-r")
    assert describe(img, "/snap/t2") == describe(img, "/snap/t") == sv_view
    bfs("cp", img, "/ro/t", "/sv/from-ro", "-r")
    assert describe(img, "/sv/from-ro") == sv_view
    # the ancestor's keys (which /sv's old view and /ro see) are all still there
    assert old_keys <= set(bfs("dump", "btree", img, "extents").text.splitlines())
    check_reflink(img)
    before = describe(img, "/")
    bfs("cp", img, "/", "/sv/all", "-r")
    assert describe(img, "/sv/all").keys() == {k for k in before if not k.startswith(b"/sv/all")}
    for sub in ("/snap/t", "/snap/t2", "/ro/t", "/sv/t", "/sv/from-ro"):  # one link each
        assert describe(img, "/sv/all" + sub) == describe(img, sub), sub
    assert describe(img, "/sv/t") == sv_view
    check_reflink(img)
    # into an existing directory (/sv/m/t exists: cp merges into it): a name on
    # both sides is refused, nothing changes
    bfs("mkdir", img, "/sv/m")
    bfs("mkdir", img, "/sv/m/t")
    bfs("cp", img, "/snap/t/small", "/sv/m/t/small")
    view = describe(img, "/")
    r = bfs("cp", img, "/snap/t", "/sv/m", "-r", check_rc=1)
    assert "already exists" in r.errtext
    assert describe(img, "/") == view
    check_reflink(img)


# ---------------------------------------------------------------------- df / usage


def test_df_and_usage_show_shared(bfs, img, tmp_path):
    put(bfs, img, tmp_path, "/a", data_of(MiB, 90))
    bfs("reflink", img, "/a", "/b")
    bfs("reflink", img, "/a", "/c")
    u = json.loads(bfs("dump", "usage", img, "--json").out)
    assert u["reflink"]["indirect_sectors"] == MiB // 512
    assert u["reflink"]["referenced_sectors"] == 3 * MiB // 512
    st = stat_json(bfs, img, "/c")
    assert st["extents"] and all(e["shared"] for e in st["extents"])
    put(bfs, img, tmp_path, "/own", data_of(64 * 1024, 91))
    df = json.loads(bfs("df", img, "--json").out)
    assert df["reflink"] == {"shared_bytes": MiB, "exclusive_bytes": 64 * 1024,
                             "referenced_bytes": 3 * MiB}
    assert "64 KiB exclusive, 1 MiB shared" in bfs("df", img).text
    assert "64 KiB exclusive, 1 MiB shared" in bfs("dump", "usage", img).text
    bfs("rm", img, "/a")
    bfs("rm", img, "/b")
    df = json.loads(bfs("df", img, "--json").out)
    assert df["reflink"] == {"shared_bytes": MiB, "exclusive_bytes": 64 * 1024,
                             "referenced_bytes": MiB}


def test_cat_of_a_large_shared_file_streams_in_bounded_pieces(bfs, img, tmp_path):
    """A reflinked file's data is read through the reflink btree while the stream
    plans its runs (fs/stream.py): a file of 20 MiB of shared data (more than one
    16 MiB run, large enough for the worker threads) reads back whole and
    identical, from both the source and the copy, with a hole in between."""
    data = data_of(20 << 20, seed=11)
    src = tmp_path / "s"
    src.write_bytes(data)
    bfs("put", img, src, "/src")
    bfs("reflink", img, "/src", "/dst")
    assert bfs("cat", img, "/dst").out == data
    assert bfs("cat", img, "/src").out == data
    # the copy's pointers with a hole after them: shared bytes, then zeros
    bfs("reflink", img, "/src", "/holey", "--length", "8M")
    bfs("reflink", img, "/src", "/holey", "--src-offset", "12M", "--dst-offset", "12M")
    out = bfs("cat", img, "/holey").out
    assert out == data[:8 << 20] + bytes(4 << 20) + data[12 << 20:]
    check_reflink(img)
