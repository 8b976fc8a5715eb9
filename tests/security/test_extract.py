"""Extraction security (TESTING.md item 6): `bfs get -r` of hostile images writes
nothing outside its destination, follows no symlink it created, stays bounded in
time, memory and file descriptors, and exits non-zero with a warning for each
thing it skipped. The images come from tests/security/make_malicious.py."""

from __future__ import annotations

import os
import resource
import stat
import subprocess
import time

import pytest

from tests.conftest import BFS
from tests.security.make_malicious import CASES, DEEP, PAYLOAD, VICTIM, build

pytestmark = pytest.mark.damaged       # the images are inconsistent on purpose
MEMORY = 1 << 30                       # address space cap of each bfs run
FDS = 128                              # RLIMIT_NOFILE of each bfs run (hard and soft)
SECONDS = 60


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("malicious")
    return {name: build(name, d / f"{name}.img") for name in CASES}


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))
    resource.setrlimit(resource.RLIMIT_NOFILE, (FDS, FDS))


def bounded(*args) -> tuple[int, str, str, float]:
    """Run bfs under memory/fd limits and a timeout: (rc, stdout, stderr, seconds)."""
    t = time.monotonic()
    p = subprocess.run([BFS, *map(str, args)], capture_output=True, timeout=SECONDS,
                       preexec_fn=_limits)
    err = p.stderr.decode("utf-8", "replace")
    assert "Traceback" not in err and "internal error" not in err, err
    assert p.returncode in (0, 1, 3), (p.returncode, err)
    return p.returncode, p.stdout.decode("utf-8", "replace"), err, time.monotonic() - t


def walk(d):
    """(path, lstat) of everything under d, iteratively (trees here are deeper than
    Python's recursion limit, which os.walk and shutil.rmtree hit)."""
    todo = [str(d)]
    while todo:
        cur = todo.pop()
        with os.scandir(cur) as it:
            for e in it:
                st = e.stat(follow_symlinks=False)
                yield e.path, st
                if e.is_dir(follow_symlinks=False):
                    todo.append(e.path)


def snapshot(d) -> dict:
    """Everything under d: {relative path: (type, size, mtime)} (symlinks not followed)."""
    return {os.path.relpath(p, d): (st.st_mode >> 12, st.st_size, st.st_mtime_ns)
            for p, st in walk(d)}


def extract(images, name, tmp_path, *extra):
    """get -r into parent/dest; checks the parent is untouched apart from dest."""
    parent = tmp_path / "parent"
    parent.mkdir()
    (parent / "victim-dir").mkdir()
    (parent / "victim-file").write_bytes(b"original")
    st_parent = os.stat(parent)
    before = snapshot(parent)
    rc, out, err, secs = bounded("get", images[name], "/", parent / "dest", "-r", *extra)
    after = snapshot(parent)
    created = {p: v for p, v in after.items() if p != "dest" and not p.startswith("dest/")}
    assert created == before, "something was written outside the destination"
    assert os.stat(parent).st_nlink == st_parent.st_nlink + 1      # dest, nothing else
    assert not os.path.lexists(VICTIM)
    assert secs < SECONDS
    dest = parent / "dest"
    for p, st in walk(dest):
        if stat.S_ISREG(st.st_mode) and st.st_size < 1 << 20:
            assert open(p, "rb").read() != b"original"
    return rc, err, dest


def names(d) -> set[str]:
    return set(os.listdir(d))


def test_unsafe_names_are_skipped(images, tmp_path):
    rc, err, dest = extract(images, "bad_names", tmp_path)
    assert rc == 1
    assert names(dest.parent) == {"dest", "victim-dir", "victim-file"}
    assert names(dest) == {"ok", os.fsdecode(b"latin1-\xe9\xff"), "updir", "xattr-nul"}
    assert names(dest / "updir") == {"escaped"}
    assert (dest / os.fsdecode(b"latin1-\xe9\xff")).read_bytes() == b"a legal non-UTF-8 name\n"
    for problem in ("name '..' is reserved", "name '.' is reserved", "empty name",
                    "name contains '/'", "name contains NUL", "longer than 255 bytes"):
        assert problem in err, problem
    assert "xattr b'user.a\\x00b': invalid name" in err
    assert os.getxattr(dest / "xattr-nul", "user.fine") == b"v"
    assert err.rstrip().endswith("item(s) not extracted (see warnings above)")


def test_symlinks_are_created_but_never_followed(images, tmp_path):
    rc, err, dest = extract(images, "symlink_then_file", tmp_path)
    assert rc == 1
    links = {n: os.readlink(dest / n) for n in names(dest) if os.path.islink(dest / n)}
    assert links == {"evil-rel": "../victim", "evil-abs": VICTIM, "evil-dot": ".",
                     "evil-up": "..", "evildir": ".."}
    assert not (dest.parent / "victim").exists()
    assert not (dest.parent / "payload").exists()
    assert (dest / "realdir").is_dir() and not (dest / "realdir").is_symlink()
    assert (dest / "realdir" / "inside").read_bytes() == b"inside\n"
    for n in ("evil-rel", "evil-abs", "evil-dot", "evil-up", "realdir"):
        assert f"/{n}: already exists on the host; skipped" in err, n
    assert "/evildir: File exists; skipped" in err
    # nothing anywhere holds the payload
    for p, st in walk(tmp_path):
        if stat.S_ISREG(st.st_mode) and st.st_size < 4096:
            assert open(p, "rb").read() != PAYLOAD, p


def test_directory_cycles_are_entered_once(images, tmp_path):
    rc, err, dest = extract(images, "dir_cycle", tmp_path)
    assert rc == 1
    assert names(dest) == {"a"} and names(dest / "a" / "b") == {"file"}
    for n in ("/a/b/loop-to-a", "/a/b/loop-to-self", "/loop-to-root"):
        assert f"{n}: directory loop; skipped" in err


def test_huge_sparse_files_cost_what_they_hold(images, tmp_path):
    rc, err, dest = extract(images, "huge_sparse", tmp_path)
    assert rc == 3                    # the symlink claiming a 1 TiB target is damage
    assert "/huge-2^62: file size 4611686018427387904 not possible on the host" in err
    assert "/huge-u64max: file size 18446744073709551615 not possible" in err
    assert "/huge-symlink: symlink claims a 1099511627776-byte target" in err
    assert "/nul-symlink: symlink target b'a\\x00b' cannot exist on a host" in err
    assert "/empty-symlink: symlink target b'' cannot exist on a host" in err
    assert names(dest) == {"sparse-1T", "inline-claims-2TiB", "nlink-max", "after"}
    one_t = dest / "sparse-1T"
    assert one_t.stat().st_size == 1 << 40 and one_t.stat().st_blocks <= 64
    with open(one_t, "rb") as f:
        assert f.read(5) == b"head\n"
        f.seek((1 << 40) - 8192)
        assert f.read(5) == b"tail\n"
    two_t = dest / "inline-claims-2TiB"
    assert two_t.stat().st_size == ((1 << 32) - 1) * 512 and two_t.stat().st_blocks <= 64
    with open(two_t, "rb") as f:
        assert f.read(8) == b"hello\0\0\0"
    assert (dest / "after").read_bytes() == b"still extracted\n"
    total = sum(p.stat().st_blocks for p in dest.iterdir()) * 512
    assert total < 1 << 20


def test_deep_tree_with_few_file_descriptors(images, tmp_path):
    try:
        rc, err, dest = extract(images, "deep_tree", tmp_path)
        assert rc == 0, err
        fd = os.open(dest, os.O_RDONLY)
        for _ in range(DEEP):
            assert os.listdir(fd) == ["d"]
            nxt = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = nxt
        with open(os.open("bottom", os.O_RDONLY, dir_fd=fd), "rb") as f:
            assert f.read() == b"at the bottom\n"
        os.close(fd)
        assert oct(os.stat(dest / "d").st_mode & 0o777) == "0o755"
    finally:   # pytest's cleanup (shutil.rmtree) recurses per level
        subprocess.run(["rm", "-rf", str(tmp_path / "parent")])


@pytest.mark.parametrize("name", list(CASES))
def test_other_commands_stay_bounded(images, name, tmp_path):
    """ls -R -l, ls --json, stat and rm -r on every hostile image: a clear result or
    a clear error, no traceback, bounded."""
    img = images[name]
    for args in (["ls", img, "/", "-R", "-l"], ["ls", img, "/", "-R", "--json"],
                 ["stat", img, "/"]):
        bounded(*args)
    copy = tmp_path / "copy.img"
    copy.write_bytes(img.read_bytes())
    rc, _out, err, _s = bounded("rm", copy, "/" + {"bad_names": "updir", "symlink_then_file":
                                                   "realdir", "dir_cycle": "a",
                                                   "huge_sparse": "huge-2^62",
                                                   "deep_tree": "d"}[name], "-r")
    if name == "dir_cycle":
        assert rc == 3 and "directory loop" in err
    else:
        assert rc == 0, err
