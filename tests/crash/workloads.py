"""The operations of crash workloads, over a fixed small file set (Ace-style).

The base image (4 MiB, 16 KiB buckets, 4 KiB nodes, 512-byte blocks: 512-byte
inline limit, 16 KiB extents) holds:

    /small      100 bytes, inline, xattr user.k
    /one        3000 bytes, one extent
    /multi      40000 bytes, three extents (changed after the snapshot)
    /d/         a directory: /d/f (1500 bytes, hard-linked as /hl), /d/e/ (empty)
    /hl         hard link to /d/f
    /sl         symlink -> small
    /many/      40 files of 40 to 3823 bytes (the extents and inodes btrees
                have two levels, so commands split, merge and rewrite nodes)
    /vol0/      a subvolume holding /vol0/v (5000 bytes)
    /snap0      snapshot of / (read-write), taken before /multi changed

Every operation is one command (`Cmd`): the real CLI code where a command
exists, the Filesystem call where it does not (overwrite, truncate). The host
files `put` copies are made once per process (`host()`).

Workloads: `singles()` (every operation alone), `sequences(n)` (every sequence
of n operations, in a fixed order), `sample(n, k, seed)`.
"""

from __future__ import annotations

import atexit
import itertools
import os
import random
import shutil
import stat
import tempfile

from bfs_tools.io.device import MemoryDevice
from tests.fsck import lib

from .harness import FORMAT_ARGS, GEOMETRY, IMAGE, Cmd, formatted_device, run

_HOST: str | None = None
HUGE = 600


def blob(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def host() -> str:
    """A host directory with the files `put` copies (made once per process)."""
    global _HOST
    if _HOST is None:
        d = tempfile.mkdtemp(prefix="bfs-crash-")
        atexit.register(shutil.rmtree, d, True)
        files = {"small": blob(1, 200), "one": blob(2, 5000), "multi": blob(3, 50000),
                 "tree/a": blob(4, 300), "tree/b": blob(5, 9000), "tree/sub/c": blob(6, 20000),
                 "src/x": blob(7, 120), "src/y": blob(8, 33000), "src/d/z": blob(9, 4096)}
        for i in range(80):
            files[f"big/{i // 20}/f{i:02d}"] = blob(200 + i, 13 * i)
        for i in range(HUGE):       # a bulk import: >512 keys per btree in one transaction
            files[f"huge/d{i // 100}/h{i:03d}"] = blob(1000 + i, i % 97)
        for rel, data in files.items():
            p = os.path.join(d, rel)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            with open(p, "wb") as f:
                f.write(data)
        os.symlink("x", os.path.join(d, "src", "link"))
        os.link(os.path.join(d, "src", "x"), os.path.join(d, "src", "d", "x-again"))
        os.chmod(os.path.join(d, "src", "y"), 0o600)
        _HOST = d
    return _HOST


def h(rel: str) -> str:
    return os.path.join(host(), rel)


def cli(name: str, *argv: str, fmt: bool = False) -> Cmd:
    return Cmd(name, tuple(a if a != "IMG" else IMAGE for a in argv), format=fmt)


def api(name: str, fn) -> Cmd:
    return Cmd(name, api=fn)


def _write(path: str, offset: int, data: bytes):
    def fn(fs):
        r = fs.resolve(path)
        fs.write(r.where, offset, data, path)
    return fn


def _truncate(path: str, size: int):
    def fn(fs):
        r = fs.resolve(path)
        fs.truncate(r.where, size, path)
    return fn


# ---------------------------------------------------------------------- the base image

_BASE: MemoryDevice | None = None
MANY = 40       # files in /many: the extents and inodes btrees get interior nodes


def base_image() -> MemoryDevice:
    """The base image of the module docstring (built once, deterministically)."""
    global _BASE
    if _BASE is None:
        dev = formatted_device()
        setup = [
            api("mk", _make_base_files),
            cli("snap0", "snapshot", "create", "IMG", "/", "/snap0"),
            api("change", _write("/multi", 5000, blob(12, 9000))),
        ]
        setup.insert(1, cli("vol0", "subvolume", "create", "IMG", "/vol0"))
        setup.insert(2, api("vol0-file", _make_vol0_file))
        with lib.deterministic(99):
            for c in setup:
                rc, err = run(c, dev)
                assert rc == 0, (c, err)
        _BASE = dev
    return _BASE.clone()


def _make_vol0_file(fs) -> None:
    fs.create(fs.resolve("/vol0").where, b"v", stat.S_IFREG | 0o600, data=blob(24, 5000))


def _setxattr(path: str, name: bytes, value: bytes):
    def fn(fs):
        fs.setxattr(fs.resolve(path).where, name, value)
    return fn


def _removexattr(path: str, name: bytes):
    def fn(fs):
        fs.removexattr(fs.resolve(path).where, name)
    return fn


def _make_base_files(fs) -> None:
    root = fs.root()
    reg = stat.S_IFREG | 0o644
    s = fs.create(root, b"small", reg, data=blob(20, 100))
    fs.setxattr(s, b"user.k", b"value")
    fs.create(root, b"one", reg, data=blob(21, 3000))
    fs.create(root, b"multi", reg, data=blob(22, 40000))
    d = fs.create(root, b"d", stat.S_IFDIR | 0o755)
    f = fs.create(d, b"f", stat.S_IFREG | 0o640, data=blob(23, 1500))
    fs.create(d, b"e", stat.S_IFDIR | 0o700)
    fs.link(f, root, b"hl")
    fs.create(root, b"sl", stat.S_IFLNK | 0o777, symlink=b"small")
    m = fs.create(root, b"many", stat.S_IFDIR | 0o755)
    for i in range(MANY):
        fs.create(m, b"m%02d" % i, reg, data=blob(100 + i, 40 + 97 * i))


# ---------------------------------------------------------------------- operations


def operations() -> list[Cmd]:
    """Every operation of the workloads, in a fixed order."""
    return [
        # put: new files of each size class, a tree, over existing files
        cli("put-inline", "put", "IMG", h("small"), "/new"),
        cli("put-extent", "put", "IMG", h("one"), "/d/new"),
        cli("put-multi", "put", "IMG", h("multi"), "/new"),
        cli("put-tree", "put", "-r", "IMG", h("tree"), "/d"),
        cli("put-tree-big", "put", "-r", "IMG", h("big"), "/big"),
        cli("put-over-inline", "put", "IMG", h("small"), "/multi"),
        cli("put-over-multi", "put", "IMG", h("multi"), "/one"),
        # overwrite (in place, across extents, in a snapshot), append
        api("overwrite-mid", _write("/multi", 10000, blob(30, 20000))),
        api("overwrite-inline", _write("/small", 10, blob(31, 30))),
        api("overwrite-snap", _write("/snap0/multi", 1000, blob(32, 6000))),
        api("append", _write("/one", 3000, blob(33, 9000))),
        # truncate: shrink, grow (sparse), to zero
        api("truncate-shrink", _truncate("/multi", 7000)),
        api("truncate-grow", _truncate("/one", 70000)),
        api("truncate-zero", _truncate("/small", 0)),
        # mkdir
        cli("mkdir", "mkdir", "IMG", "/d/new"),
        cli("mkdir-p", "mkdir", "-p", "IMG", "/x/y"),
        # rm
        cli("rm", "rm", "IMG", "/one"),
        cli("rm-linked", "rm", "IMG", "/hl"),
        cli("rm-r", "rm", "-r", "IMG", "/d"),
        cli("rm-r-many", "rm", "-r", "IMG", "/many"),
        # mv: rename, over an existing file, a directory elsewhere, into a directory
        cli("mv", "mv", "IMG", "/one", "/one2"),
        cli("mv-over", "mv", "IMG", "/small", "/multi"),
        cli("mv-dir", "mv", "IMG", "/d/e", "/e2"),
        cli("mv-into", "mv", "IMG", "/one", "/d"),
        cli("mv-many", "mv", "IMG", "/many", "/d/e/many"),
        # ln, ln -s
        cli("ln", "ln", "IMG", "/one", "/d/one-link"),
        cli("ln-s", "ln", "-s", "IMG", "/d/f", "/sl2"),
        # xattrs (no command of their own: the Filesystem calls)
        api("setxattr", _setxattr("/multi", b"user.new", blob(34, 300))),
        api("removexattr", _removexattr("/small", b"user.k")),
        # inside the snapshot (writes at its own snapshot id, whiteouts over the root's keys)
        cli("rm-in-snap", "rm", "IMG", "/snap0/one"),
        cli("mkdir-in-snap", "mkdir", "IMG", "/snap0/d/sd"),
        cli("mv-in-snap", "mv", "IMG", "/snap0/d/f", "/snap0/f-moved"),
        # snapshots and subvolumes
        cli("snap-create", "snapshot", "create", "IMG", "/", "/snap1"),
        cli("snap-create-ro", "snapshot", "create", "--read-only", "IMG", "/", "/d/ro"),
        cli("snap-delete", "snapshot", "delete", "IMG", "/snap0"),
        cli("snap-of-subvol", "snapshot", "create", "IMG", "/vol0", "/d/vs"),
        cli("subvol-create", "subvolume", "create", "IMG", "/vol1"),
        cli("subvol-delete", "subvolume", "delete", "IMG", "/vol0"),
        # reflink, cp --reflink
        cli("reflink", "reflink", "IMG", "/multi", "/r"),
        cli("reflink-range", "reflink", "IMG", "/multi", "/one", "--src-offset", "16384",
            "--dst-offset", "0", "--length", "16384"),
        cli("cp-reflink", "cp", "IMG", "/multi", "/m2"),
        cli("cp-r", "cp", "-r", "IMG", "/d", "/d2"),
        cli("cp-never", "cp", "--reflink=never", "IMG", "/one", "/snap0/d/c"),
        cli("cp-r-many", "cp", "-r", "IMG", "/many", "/snap0/many2"),
    ]


def by_name() -> dict[str, Cmd]:
    return {c.name: c for c in operations()}


def singles() -> list[list[Cmd]]:
    return [[c] for c in operations()]


def sequences(n: int) -> list[list[Cmd]]:
    return [list(p) for p in itertools.product(operations(), repeat=n)]


def sample(n: int, k: int, seed: int) -> list[list[Cmd]]:
    """k distinct sequences of n operations, seeded."""
    ops = operations()
    rng = random.Random(seed)
    total = len(ops) ** n
    picks = rng.sample(range(total), min(k, total))
    out = []
    for p in picks:
        seq = []
        for _ in range(n):
            p, i = divmod(p, len(ops))
            seq.append(ops[i])
        out.append(seq)
    return out


def workload_name(cmds: list[Cmd]) -> str:
    return "+".join(c.name for c in cmds)


# ---------------------------------------------------------------------- format --source


def format_source(tree: str = "src") -> Cmd:
    return cli(f"format-source-{tree}", "format", "IMG", *FORMAT_ARGS, "--force", "--source",
               h(tree), fmt=True)


def empty_device() -> MemoryDevice:
    return MemoryDevice(GEOMETRY["size"])
