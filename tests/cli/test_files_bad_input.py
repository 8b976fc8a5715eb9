"""File commands on bad input: each gets one clear error line, the documented exit
code, and the image stays consistent (every old file reads back identical)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import tempfile

import pytest

from bfs_tools.errors import InvalidNameError, NoSpaceError, NotEmptyError
from bfs_tools.fs.filesystem import Filesystem
from bfs_tools.store import Store
from tests.conftest import BFS
from tests.fs_checks import verify_image

NOBODY = 65534


def one_line_error(r, needle: str) -> None:
    assert needle in r.errtext, r
    assert r.errtext.startswith("bfs: error: ") and "Traceback" not in r.errtext, r


def digest_all(bfs, img) -> dict[str, str]:
    """{path: sha256} of every regular file: the listing through the CLI, the data
    through the Python API (one process, not one per file)."""
    out = {}
    with Filesystem.open(str(img)) as fs:
        for d in json.loads(bfs("ls", img, "/", "-R", "--json").out):
            for e in d["entries"]:
                if e["type"] == "file":
                    p = d["path"].rstrip("/") + "/" + e["name"]
                    r = fs.resolve(p)
                    h = hashlib.sha256()
                    for chunk in fs.iter_read(r.where, r.inode, p):
                        h.update(chunk)
                    out[p] = h.hexdigest()
    return out


@pytest.fixture
def img(formatted, tmp_path, bfs):
    p = formatted("64M")
    (tmp_path / "f").write_bytes(b"a file")
    bfs("put", p, tmp_path / "f", "/file")
    bfs("mkdir", p, "/dir/sub", "-p")
    bfs("put", p, tmp_path / "f", "/dir/sub/x")
    return p


@pytest.mark.parametrize("args", [
    ["ls", "/nope"], ["ls", "/dir/nope/deeper"], ["stat", "/nope"], ["cat", "/nope"],
    ["get", "/nope", "OUT"], ["rm", "/nope"], ["mv", "/nope", "/x"], ["ln", "/nope", "/x"],
    ["mkdir", "/nope/x"], ["put", "SRC", "/nope/x"],
])
def test_path_not_found(bfs, img, tmp_path, args):
    args = [str(tmp_path / "out") if a == "OUT" else str(tmp_path / "f") if a == "SRC" else a
            for a in args]
    r = bfs(args[0], img, *args[1:], check_rc=1)
    one_line_error(r, "no such file or directory")
    assert r.errtext.count("\n") == 1


@pytest.mark.parametrize("args", [
    ["ls", "/file/x"], ["cat", "/file/x"], ["mkdir", "/file/x"], ["put", "SRC", "/file/x"],
    ["ln", "/file", "/file/x"], ["mv", "/dir", "/file/x"],
])
def test_not_a_directory(bfs, img, tmp_path, args):
    args = [str(tmp_path / "f") if a == "SRC" else a for a in args]
    r = bfs(args[0], img, *args[1:], check_rc=1)
    one_line_error(r, "not a directory")


def test_directory_not_empty(bfs, img):
    r = bfs("rm", img, "/dir", check_rc=1)
    one_line_error(r, "/dir: is a directory (use -r)")
    r = bfs("mv", img, "/file", "/dir/sub", check_rc=0)        # into it: fine
    bfs("mkdir", img, "/other")
    bfs("mkdir", img, "/other/sub")
    r = bfs("mv", img, "/other/sub", "/dir", check_rc=1)        # over the non-empty /dir/sub
    one_line_error(r, "not empty")
    with Filesystem.open(str(img), write=True) as fs:
        d = fs.resolve("/dir")
        with pytest.raises(NotEmptyError):
            fs.unlink(d.where, b"sub", allow_dir=True)
    r = bfs("cat", img, "/dir", check_rc=1)
    one_line_error(r, "is a directory")
    assert bfs("cat", img, "/dir/sub/file").out == b"a file"


def test_name_longer_than_255_bytes(bfs, img, tmp_path):
    ok, long = "n" * 255, "n" * 256
    bfs("mkdir", img, "/" + ok)
    utf8 = "é" * 128                                          # 256 bytes in 128 characters
    for args in (["mkdir", "/" + long], ["mkdir", "/" + utf8], ["put", tmp_path / "f", "/" + long],
                 ["ln", "/file", "/" + long], ["ln", "x", "/" + long, "-s"],
                 ["mv", "/file", "/" + long], ["ls", "/" + long], ["cat", "/dir/" + long]):
        r = bfs(args[0], img, *args[1:], check_rc=1)
        one_line_error(r, "longer than 255 bytes")
    assert [e["name"] for e in json.loads(bfs("ls", img, "/", "--json").out)] == [
        "dir", "file", ok]


def test_names_with_nul_or_slash(bfs, img, capfd):
    from bfs_tools.cli.main import main

    for argv in (["mkdir", str(img), "/a\0b"], ["ln", str(img), "x", "/l\0nk", "-s"],
                 ["cat", str(img), "/file\0"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 1
        err = capfd.readouterr().err
        assert "bfs: error:" in err and "NUL" in err and "Traceback" not in err
    with Filesystem.open(str(img), write=True) as fs:
        root = fs.root()
        for bad in (b"a\0b", b"a/b", b"", b".", b"..", b"x" * 256):
            with pytest.raises(InvalidNameError):
                fs.create(root, bad, stat.S_IFREG | 0o644)
            with pytest.raises(InvalidNameError):
                fs.rename(root, b"file", root, bad)
    assert [e["name"] for e in json.loads(bfs("ls", img, "/", "--json").out)] == ["dir", "file"]


def test_put_into_a_full_filesystem(bfs, formatted, tmp_path):
    img = formatted("16M")
    keep = tmp_path / "keep"
    keep.write_bytes(os.urandom(3 << 20))
    tree = tmp_path / "tree"
    tree.mkdir()
    for i in range(20):
        (tree / f"f{i}").write_bytes(os.urandom(100_000))
    bfs("put", img, keep, "/keep")
    bfs("put", img, tree, "/tree", "-r")
    before = digest_all(bfs, img)
    usage = json.loads(bfs("df", img, "--json").out)
    big = tmp_path / "big"
    big.write_bytes(os.urandom(20 << 20))
    # a new file, an overwrite, a tree, into a directory: all refused whole
    for args in (["put", big, "/big"], ["put", big, "/keep"], ["put", big, "/tree"],
                 ["put", big, "/tree/f3"]):
        r = bfs(args[0], img, *args[1:], check_rc=4)
        one_line_error(r, "no space left on the image")
        assert digest_all(bfs, img) == before
        assert json.loads(bfs("df", img, "--json").out)["used"] == usage["used"]
        problems = verify_image(img)
        assert not problems, problems[:10]
    big_tree = tmp_path / "bigtree"
    big_tree.mkdir()
    for i in range(40):
        (big_tree / f"g{i}").write_bytes(os.urandom(500_000))
    r = bfs("put", img, big_tree, "/bigtree", "-r", check_rc=4)
    one_line_error(r, "no space left")
    assert digest_all(bfs, img) == before
    assert not verify_image(img)
    # the space is still usable: free some, then a file that fits goes in
    bfs("rm", img, "/keep")
    (tmp_path / "fits").write_bytes(os.urandom(2 << 20))
    bfs("put", img, tmp_path / "fits", "/fits")
    assert bfs("cat", img, "/fits").out == (tmp_path / "fits").read_bytes()
    assert not verify_image(img)


def test_format_source_larger_than_the_image(bfs, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(30):
        (src / f"f{i}").write_bytes(os.urandom(1 << 20))
    r = bfs("format", tmp_path / "small.img", "--size", "16M", "--source", src, check_rc=4)
    one_line_error(r, "no space left")


def test_allocator_never_hands_out_a_bucket_twice_in_one_transaction(formatted):
    img = formatted("16M")
    store = Store.open(str(img), write=True)
    try:
        alloc = store.allocator
        seen = set()
        with pytest.raises(NoSpaceError):
            for _ in range(2 * store.sb.nbuckets):
                sector, _gen, grant = alloc.allocate_data(store.sb.bucket_size)
                bucket = sector * 512 // store.sb.bucket_size
                assert bucket not in seen, f"bucket {bucket} handed out twice"
                seen.add(bucket)
    finally:
        store.abort()


# ---------------------------------------------------------------------- host side


AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


def _as_nobody_possible() -> bool:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return False
    r = subprocess.run([*AS_NOBODY, BFS, "--version"], capture_output=True)
    return r.returncode == 0


def run_as(nobody: bool, *args):
    prefix = AS_NOBODY if nobody else []
    proc = subprocess.run([*prefix, BFS, *map(str, args)], capture_output=True, timeout=120)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


@pytest.fixture
def shared_dir():
    """A directory another user can work in (tmp_path is private to root)."""
    d = tempfile.mkdtemp(prefix="bfs-test-")
    os.chmod(d, 0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_unreadable_source_files_are_reported_and_the_rest_copied(bfs, shared_dir):
    """Only meaningful without root's override: run as nobody when root."""
    uid = False
    if os.geteuid() == 0:
        if not _as_nobody_possible():
            pytest.skip("cannot run bfs as nobody here")
        uid = True
    src = os.path.join(shared_dir, "src")
    os.makedirs(os.path.join(src, "closed"))
    os.makedirs(os.path.join(src, "open"))
    for p, data in (("ok", b"readable"), ("secret", b"no"), ("open/fine", b"fine"),
                    ("closed/hidden", b"hidden")):
        with open(os.path.join(src, p), "wb") as f:
            f.write(data)
    os.chmod(os.path.join(src, "secret"), 0)
    os.chmod(os.path.join(src, "closed"), 0)
    for p in ("", "ok", "open", "open/fine"):
        os.chmod(os.path.join(src, p), 0o755 if os.path.isdir(os.path.join(src, p)) else 0o644)
    if uid and subprocess.run([*AS_NOBODY, "cat", os.path.join(src, "secret")],
                              capture_output=True).returncode == 0:
        pytest.skip("nobody can read a mode-0 file here")
    img = os.path.join(shared_dir, "img.img")
    for how in ("format", "put"):
        if os.path.exists(img):
            os.unlink(img)
        if how == "format":
            rc, out, err = run_as(uid, "format", img, "--size", "64M", "--source", src)
            assert rc == 0, err           # format reports problems but succeeds
        else:
            assert run_as(uid, "format", img, "--size", "64M")[0] == 0
            rc, out, err = run_as(uid, "put", img, src, "/copy", "-r")
            assert rc == 1, err
        assert "secret" in err and "closed" in err and "Permission denied" in err, err
        base = "/" if how == "format" else "/copy"
        listing = {d["path"]: sorted(e["name"] for e in d["entries"])
                   for d in json.loads(bfs("ls", img, base, "-R", "--json").out)}
        assert listing[base] == ["closed", "ok", "open"], listing   # the directory, empty
        assert bfs("cat", img, base.rstrip("/") + "/open/fine").out == b"fine"
        assert not verify_image(img)
    os.chmod(os.path.join(src, "closed"), 0o755)


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_cross_device_hard_links_in_source_stay_separate(bfs, new_image, tmp_path):
    src = tmp_path / "src"
    mounts = [src / "m1", src / "m2"]
    for m in mounts:
        m.mkdir(parents=True)
        if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(m)],
                          capture_output=True).returncode != 0:
            pytest.skip("cannot mount a tmpfs")
    try:
        for i, m in enumerate(mounts):
            (m / "f").write_bytes(f"content {i}".encode())
            os.link(m / "f", m / "g")
        s1, s2 = (mounts[0] / "f").stat(), (mounts[1] / "f").stat()
        if s1.st_ino != s2.st_ino:
            pytest.skip("the two tmpfs did not give the same inode number")
        assert s1.st_dev != s2.st_dev
        img = new_image()
        bfs("format", img, "--size", "64M", "--source", src)
        st = {p: json.loads(bfs("stat", img, p, "--json").out)
              for p in ("/m1/f", "/m1/g", "/m2/f", "/m2/g")}
        assert st["/m1/f"]["inum"] == st["/m1/g"]["inum"] != st["/m2/f"]["inum"]
        assert st["/m2/f"]["inum"] == st["/m2/g"]["inum"]
        assert all(s["nlink"] == 2 for s in st.values())
        assert bfs("cat", img, "/m1/g").out == b"content 0"
        assert bfs("cat", img, "/m2/g").out == b"content 1"
    finally:
        for m in mounts:
            subprocess.run(["umount", str(m)], capture_output=True)


def test_read_only_image(bfs, formatted, tmp_path, shared_dir):
    img = formatted("64M")
    (tmp_path / "f").write_bytes(b"contents")
    bfs("put", img, tmp_path / "f", "/f")
    uid = False
    ro = os.path.join(shared_dir, "ro.img")
    shutil.copyfile(img, ro)
    os.chmod(ro, 0o444)
    if os.geteuid() == 0:
        if not _as_nobody_possible():
            pytest.skip("cannot run bfs as nobody here")
        uid = True
    src = os.path.join(shared_dir, "src")
    with open(src, "wb") as f:
        f.write(b"new")
    os.chmod(src, 0o644)
    for args in (["put", src, "/g"], ["mkdir", "/d"], ["rm", "/f"], ["mv", "/f", "/g"],
                 ["ln", "/f", "/g"], ["ln", "x", "/g", "-s"]):
        rc, out, err = run_as(uid, args[0], ro, *args[1:])
        assert rc == 6, (args, err)
        assert "cannot open for writing" in err and "Permission denied" in err, err
        assert err.count("\n") == 1
    rc, out, err = run_as(uid, "ls", ro, "/", "-l")
    assert rc == 0 and out.endswith(" f\n"), err
    rc, out, err = run_as(uid, "cat", ro, "/f")
    assert (rc, out) == (0, "contents")
    rc, out, err = run_as(uid, "stat", ro, "/f")
    assert rc == 0 and "Size: 8" in out
    rc, out, err = run_as(uid, "get", ro, "/", os.path.join(shared_dir, "out"), "-r")
    assert rc == 0, err
    assert open(os.path.join(shared_dir, "out", "f"), "rb").read() == b"contents"
    with open(ro, "rb") as a, open(img, "rb") as b:
        assert a.read() == b.read()                 # not one byte changed


def test_host_side_errors(bfs, img, tmp_path):
    r = bfs("put", img, tmp_path / "missing", "/x", check_rc=6)
    one_line_error(r, "No such file or directory")
    r = bfs("get", img, "/file", tmp_path / "no" / "such" / "dir", check_rc=6)
    one_line_error(r, "No such file or directory")
    r = bfs("get", img, "/dir", tmp_path / "out", check_rc=1)
    one_line_error(r, "use -r")
    (tmp_path / "out").mkdir()
    bfs("get", img, "/dir", tmp_path / "out", "-r")
    r = bfs("get", img, "/dir", tmp_path / "out", "-r", check_rc=1)      # exists already
    one_line_error(r, "already exists")
    bfs("get", img, "/dir", f"{tmp_path}/slash/", "-r")              # a trailing slash
    assert (tmp_path / "slash" / "sub" / "x").read_bytes() == b"a file"
    r = bfs("get", img, "/file", f"{tmp_path}/nf/", check_rc=1)
    one_line_error(r, "not a directory")
    r = bfs("get", img, "/dir", tmp_path / "missing" / "x", "-r", check_rc=6)
    one_line_error(r, "No such file or directory")
    r = bfs("ls", tmp_path / "not-an-image", "/", check_rc=6)
    (tmp_path / "zero.img").write_bytes(b"")
    r = bfs("cat", tmp_path / "zero.img", "/f", check_rc=3)
