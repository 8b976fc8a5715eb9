"""Host trees for round-trip tests: a generator with every file type, and a
comparison helper that walks two host trees (or a host tree and an image, through
`bfs ls --json -R` / `bfs stat --json`) and reports every difference.

A tree's description is {relative path (bytes): Node}; hard links are compared as
groups of paths sharing one inode, never by inode number.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

BLOCK = 4096
# an odd ns value, so truncation to µs or s shows
MTIME_NS = 1_600_000_000_123_456_789


@dataclass
class Node:
    type: str                      # file dir symlink char block fifo socket
    mode: int                      # permission bits
    uid: int
    gid: int
    size: int = 0                  # regular files
    data: bytes | None = None      # regular files (content)
    target: bytes | None = None    # symlinks
    rdev: tuple[int, int] | None = None
    atime_ns: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    nlink: int = 1
    ino: int = 0                   # only to build link groups
    xattrs: dict[bytes, bytes] = field(default_factory=dict)


TYPES = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink",
         stat.S_IFCHR: "char", stat.S_IFBLK: "block", stat.S_IFIFO: "fifo",
         stat.S_IFSOCK: "socket"}


def is_root() -> bool:
    return os.geteuid() == 0


# ---------------------------------------------------------------------- generating


def _write(p: bytes, data: bytes) -> None:
    with open(p, "wb") as f:
        f.write(data)


def _sparse(p: bytes, size: int, pieces: list[tuple[int, bytes]]) -> None:
    with open(p, "wb") as f:
        f.truncate(size)
        for off, data in pieces:
            f.seek(off)
            f.write(data)


def make_socket(path: bytes) -> None:
    """A unix socket at `path` (bound in a short temporary directory, then moved,
    since socket paths are limited to ~108 bytes)."""
    d = tempfile.mkdtemp(prefix="s", dir="/tmp")
    try:
        s = socket.socket(socket.AF_UNIX)
        s.bind(os.path.join(d, "s"))
        s.close()
        os.rename(os.path.join(d, "s").encode(), path)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def make_everything_tree(root: Path, *, devices: bool | None = None) -> None:
    """Every file type the format holds, odd names, hard links, xattrs, owners."""
    devices = is_root() if devices is None else devices
    r = os.fsencode(root)
    j = os.path.join
    os.makedirs(r, exist_ok=True)
    rnd = __import__("random").Random(7)

    def blob(n: int) -> bytes:
        return rnd.randbytes(n)

    _write(j(r, b"empty"), b"")
    _write(j(r, b"one"), b"x")
    _write(j(r, b"block-1"), blob(BLOCK - 1))
    _write(j(r, b"block"), blob(BLOCK))
    _write(j(r, b"block+1"), blob(BLOCK + 1))
    _write(j(r, b"big"), blob((1 << 20) + 7))
    _sparse(j(r, b"sparse"), 8 << 20, [(1 << 20, blob(5000)), (5 << 20, blob(70000))])
    _sparse(j(r, b"hole-at-end"), 3 << 20, [(0, blob(BLOCK))])
    _sparse(j(r, b"all-hole"), 2 << 20, [])
    os.mkdir(j(r, b"dir with spaces"))
    _write(j(r, b"dir with spaces", b"file one.txt"), b"spaces\n")
    _write(j(r, "données-ünïcødé-日本語.txt".encode()), "é\n".encode())
    _write(j(r, b"latin1-\xe9\xff-name"), b"not utf-8\n")    # non-UTF-8 bytes
    _write(j(r, b"ctl-\x01\x1b[31m-name"), b"control chars\n")
    _write(j(r, b"n" * 255), b"long name\n")
    _write(j(r, ("é" * 127).encode() + b"x"), b"255 bytes of UTF-8\n")
    # hard links, in one directory and across directories
    os.mkdir(j(r, b"a"))
    os.mkdir(j(r, b"b"))
    _write(j(r, b"a", b"h1"), blob(9000))
    os.link(j(r, b"a", b"h1"), j(r, b"a", b"h2"))
    os.link(j(r, b"a", b"h1"), j(r, b"b", b"h3"))
    _write(j(r, b"b", b"small-linked"), b"tiny")
    os.link(j(r, b"b", b"small-linked"), j(r, b"small-linked-too"))
    # symlinks: relative, absolute, dangling, to a directory, long target
    os.symlink(b"one", j(r, b"rel-link"))
    os.symlink(b"../one", j(r, b"a", b"up-link"))
    os.symlink(b"/etc/hostname", j(r, b"abs-link"))
    os.symlink(b"does/not/exist", j(r, b"dangling"))
    os.symlink(b"a", j(r, b"dir-link"))
    os.symlink(b"t" * 1000, j(r, b"long-target"))
    # special files
    os.mkfifo(j(r, b"fifo"), 0o640)
    make_socket(j(r, b"sock"))
    if devices:
        os.mknod(j(r, b"chardev"), stat.S_IFCHR | 0o600, os.makedev(1, 3))
        os.mknod(j(r, b"blockdev"), stat.S_IFBLK | 0o660, os.makedev(7, 200))
    # deep nesting
    d = j(r, b"deep")
    for i in range(60):
        d = j(d, b"level%02d" % i)
    os.makedirs(d)
    _write(j(d, b"bottom"), b"at the bottom\n")
    # odd modes
    _write(j(r, b"setuid"), b"#!/bin/sh\n")
    os.chmod(j(r, b"setuid"), 0o4755)
    os.mkdir(j(r, b"sticky"))
    os.chmod(j(r, b"sticky"), 0o1777)
    _write(j(r, b"private"), b"secret")
    os.chmod(j(r, b"private"), 0o600)
    # xattrs (user.* on files and directories; trusted.* as root)
    os.setxattr(j(r, b"one"), b"user.comment", b"hello")
    os.setxattr(j(r, b"one"), b"user.empty", b"")
    os.setxattr(j(r, b"one"), b"user.binary", bytes(range(256)))
    os.setxattr(j(r, b"a"), b"user.dir", b"on a directory")
    os.setxattr(j(r, b"big"), b"user." + b"k" * 200, b"v" * 2000)
    if is_root():
        os.setxattr(j(r, b"one"), b"trusted.t", b"root only")
    # owners (root only), then times on everything (children before parents)
    for dirpath, dirnames, filenames in os.walk(r, topdown=False):
        for n in dirnames + filenames:
            p = j(dirpath, n)
            if is_root():
                os.chown(p, 1000 + len(n) % 7, 2000 + len(n) % 5, follow_symlinks=False)
            os.utime(p, ns=(MTIME_NS + 7 * len(n), MTIME_NS + len(n)), follow_symlinks=False)
    os.utime(r, ns=(MTIME_NS + 3, MTIME_NS + 1))


# ---------------------------------------------------------------------- describing


def _xattrs(p: bytes) -> dict[bytes, bytes]:
    out = {}
    try:
        names = os.listxattr(p, follow_symlinks=False)
    except OSError:
        return out
    for n in names:
        if n.startswith("security.") or n.startswith("system."):
            continue
        try:
            out[os.fsencode(n)] = os.getxattr(p, n, follow_symlinks=False)
        except OSError:
            pass
    return out


_NOATIME = getattr(os, "O_NOATIME", 0)


def describe_host(root) -> dict[bytes, Node]:
    """{relative path: Node} for a host tree ("" is the root itself). Reads with
    O_NOATIME, so describing a tree does not change its access times."""
    r = os.fsencode(root)
    out: dict[bytes, Node] = {}

    def one(p: bytes, rel: bytes) -> None:
        st = os.lstat(p)
        if stat.S_ISLNK(st.st_mode):
            os.readlink(p)       # reading a link may set its atime: describe it after that
            st = os.lstat(p)
        t = TYPES[stat.S_IFMT(st.st_mode)]
        n = Node(t, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid,
                 atime_ns=st.st_atime_ns, mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns,
                 nlink=st.st_nlink, ino=st.st_ino, xattrs=_xattrs(p))
        if t == "file":
            n.size = st.st_size
            fd = os.open(p, os.O_RDONLY | _NOATIME)
            with os.fdopen(fd, "rb") as f:
                n.data = f.read()
        elif t == "symlink":
            n.target = os.readlink(p)
        elif t in ("char", "block"):
            n.rdev = (os.major(st.st_rdev), os.minor(st.st_rdev))
        out[rel] = n
        if t == "dir":
            fd = os.open(p, os.O_RDONLY | os.O_DIRECTORY | _NOATIME)
            try:
                names = [os.fsencode(n) for n in os.listdir(fd)]
            finally:
                os.close(fd)
            for name in sorted(names):
                one(os.path.join(p, name), os.path.join(rel, name) if rel else name)

    one(r, b"")
    return out


def describe_image(run_bfs, image, path: str = "/", *, stat_every: bool = False
                   ) -> dict[bytes, Node]:
    """The same description read through the CLI: names, types, modes, owners,
    sizes, link counts, mtimes, symlink targets and device numbers from one
    `bfs ls -R --json`; access/change times, xattrs and contents through the Python
    API (or, with stat_every, `bfs stat --json` and `bfs cat` for every entry)."""
    from bfs_tools.fs.filesystem import Filesystem

    listing = json.loads(run_bfs("ls", image, path, "-R", "--json").out)
    base = path.rstrip("/")
    out: dict[bytes, Node] = {}
    with Filesystem.open(str(image)) as fs:
        def api(p: str, n: Node) -> None:
            r = fs.resolve(p, follow=False)
            ino = r.inode
            n.atime_ns = ino.atime_sec * 10**9 + ino.atime_nsec
            n.ctime_ns = ino.ctime_sec * 10**9 + ino.ctime_nsec
            n.xattrs = {x.full_name: x.value for x in fs.listxattr(r.where)}
            if n.type == "file":
                n.data = b"".join(fs.iter_read(r.where, ino, p))

        root = _node_from_stat(json.loads(run_bfs("stat", image, path, "--json").out))
        out[b""] = root
        for d in listing:
            for e in d["entries"]:
                p = d["path"].rstrip("/") + "/" + e["name"]
                if stat_every:
                    st = json.loads(run_bfs("stat", image, p, "--json").out)
                    n = _node_from_stat(st)
                    assert (n.type, n.nlink, n.size, n.uid, n.gid) == (
                        e["type"], e["nlink"], e["size"], e["uid"], e["gid"])
                    assert n.mtime_ns == e["mtime_ns"]
                    if n.type == "file":
                        n.data = run_bfs("cat", image, p).out
                else:
                    n = Node(e["type"], int(e["mode"], 8), e["uid"], e["gid"], size=e["size"],
                             mtime_ns=e["mtime_ns"], nlink=e["nlink"], ino=e["inode"])
                    api(p, n)
                if n.type == "symlink":
                    n.target = os.fsencode(e["target"])
                if n.type in ("char", "block"):
                    n.rdev = tuple(e["rdev"])
                out[os.fsencode(p[len(base):].lstrip("/"))] = n
    return out


def _node_from_stat(st: dict) -> Node:
    mode = int(st["mode"], 8)
    n = Node(st["type"], stat.S_IMODE(mode), st["uid"], st["gid"], size=st["size"],
             atime_ns=st["atime_sec"] * 10**9 + st["atime_nsec"],
             mtime_ns=st["mtime_sec"] * 10**9 + st["mtime_nsec"],
             ctime_ns=st["ctime_sec"] * 10**9 + st["ctime_nsec"],
             nlink=st["nlink"], ino=st["inum"],
             xattrs={os.fsencode(k): bytes.fromhex(v) for k, v in st["xattrs"].items()})
    if n.type in ("char", "block"):
        rdev = st["rdev"]
        n.rdev = (os.major(rdev), os.minor(rdev))
    return n


# ---------------------------------------------------------------------- comparing


def link_groups(tree: dict[bytes, Node]) -> set[frozenset[bytes]]:
    by_ino: dict[int, set[bytes]] = {}
    for p, n in tree.items():
        if n.type != "dir":
            by_ino.setdefault(n.ino, set()).add(p)
    return {frozenset(g) for g in by_ino.values() if len(g) > 1}


def compare_trees(expected: dict[bytes, Node], actual: dict[bytes, Node], *,
                  owners: bool = True, atime: bool = True, ctime: bool = False,
                  xattrs: bool = True, ignore: set[bytes] = frozenset(),
                  symlink_times: bool = True, dir_times: bool = True,
                  specials: bool = True) -> list[str]:
    """Every difference between two descriptions, as readable lines (empty: same)."""
    problems = []
    exp = {p: n for p, n in expected.items() if p not in ignore}
    act = {p: n for p, n in actual.items() if p not in ignore}
    if not specials:
        exp = {p: n for p, n in exp.items() if n.type not in ("char", "block", "socket")}
    for p in sorted(set(exp) - set(act)):
        problems.append(f"{p!r}: missing")
    for p in sorted(set(act) - set(exp)):
        problems.append(f"{p!r}: unexpected")
    for p in sorted(set(exp) & set(act)):
        e, a = exp[p], act[p]
        checks = [("type", e.type, a.type), ("nlink", e.nlink if e.type != "dir" else 0,
                                             a.nlink if a.type != "dir" else 0)]
        if e.type != "symlink":
            checks.append(("mode", oct(e.mode), oct(a.mode)))
        if owners:
            checks += [("uid", e.uid, a.uid), ("gid", e.gid, a.gid)]
        if e.type == "file":
            checks += [("size", e.size, a.size), ("data", e.data == a.data, True)]
        if e.type == "symlink":
            checks.append(("target", e.target, a.target))
        if e.type in ("char", "block"):
            checks.append(("rdev", e.rdev, a.rdev))
        timed = (e.type != "symlink" or symlink_times) and (e.type != "dir" or dir_times)
        if timed:
            checks.append(("mtime_ns", e.mtime_ns, a.mtime_ns))
            if atime and e.type != "symlink":    # reading a link (readlink) may set it
                checks.append(("atime_ns", e.atime_ns, a.atime_ns))
            if ctime:
                checks.append(("ctime_ns", e.ctime_ns, a.ctime_ns))
        if xattrs and e.type != "symlink":
            checks.append(("xattrs", e.xattrs, a.xattrs))
        for what, x, y in checks:
            if x != y:
                problems.append(f"{p!r}: {what} {x!r} != {y!r}")
    ge = {g for g in link_groups(exp)}
    ga = {g for g in link_groups(act)}
    if ge != ga:
        problems.append(f"hard link groups differ: {sorted(map(sorted, ge))} != "
                        f"{sorted(map(sorted, ga))}")
    return problems
