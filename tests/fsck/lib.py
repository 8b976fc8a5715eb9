"""Shared machinery of the fsck corpus, the error-id injection tests and the fuzzers.

* `deterministic(seed)`: os.urandom and the clock made reproducible, so a
  regenerated fixture is byte-identical unless the code that wrote it changed.
* `build_base(path)`: a small image with a bit of everything (files inline and
  in extents, a sparse file, directories, hard links, a symlink, special files,
  xattrs, a snapshot, a subvolume, a reflinked file), and its manifest (path ->
  SHA-256 of the contents, per view).
* Raw editing through the format declarations: `nodes()` (every btree node with
  its location and keys), `rewrite_node()` (re-encode a node, resealed or not),
  `put_keys()` (keys written through a transaction without triggers: states the
  writer can produce when a trigger or a repair went wrong).
* `run_cli()`: one `bfs` command in-process (fast; same code path as the
  installed command, exit codes included), with a time limit.
* `normalise()`: the filter applied to check output before comparing it with
  the expected output (UUIDs, times, durations, checksum values).
* `read_tree()` / `preserved()`: what survives of the manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import random
import re
import signal
import stat
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bfs_tools.formats.constants import BSET_MAGIC, BTREE_NODE_MAGIC, ROOT_SNAPSHOT
from bfs_tools.formats.ids import BtreeId

from bfs_tools.btree.node import BSET_HEADER_SIZE, NODE_HEADER_SIZE, BsetHeader, NodeHeader
from bfs_tools.btree.ptr import decode_ptr
from bfs_tools.checksum import checksum
from bfs_tools.keys import Key, encode_keys
from bfs_tools.store import Store

# geometry of every corpus image: small, several nodes per btree
FORMAT_ARGS = ["--size", "4M", "--bucket-size", "16k", "--btree-node-size", "4k",
               "--block-size", "512"]
SECTOR = 512


# ---------------------------------------------------------------- determinism

@contextlib.contextmanager
def deterministic(seed: int):
    """os.urandom, time.time_ns and time.time made reproducible for the block."""
    rng = random.Random(seed)
    clock = [1_700_000_000_000_000_000]
    saved = (os.urandom, time.time_ns, time.time)

    def urandom(n: int) -> bytes:
        return rng.randbytes(n)

    def time_ns() -> int:
        clock[0] += 1_000_003
        return clock[0]

    def time_() -> float:
        return time_ns() / 1e9

    os.urandom, time.time_ns, time.time = urandom, time_ns, time_
    try:
        yield rng
    finally:
        os.urandom, time.time_ns, time.time = saved


# ---------------------------------------------------------------- running bfs

@contextlib.contextmanager
def memory_limit(nbytes: int):
    """The process may grow by at most `nbytes` of address space in the block:
    past it allocations fail (MemoryError, which the CLI reports as an internal
    error, so a command that is not bounded shows as a crash)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    try:
        with open("/proc/self/statm") as f:
            vsize = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        yield
        return
    limit = vsize + nbytes
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


class Timeout(BaseException):
    """A command ran past its time limit (BaseException: the CLI's error
    policy must not turn it into an ordinary error)."""


@dataclass
class Run:
    rc: int
    out: str
    err: str

    @property
    def crashed(self) -> bool:
        """A bug: a traceback, an internal error, or an undocumented exit code."""
        return ("Traceback" in self.err or "internal error" in self.err
                or "Traceback" in self.out)

    def __repr__(self) -> str:
        return f"<rc={self.rc}\nstdout:\n{self.out[-3000:]}\nstderr:\n{self.err[-3000:]}>"


class _Sink(io.TextIOWrapper):
    def __init__(self):
        super().__init__(io.BytesIO(), encoding="utf-8", errors="backslashreplace",
                         write_through=True)

    def isatty(self) -> bool:
        return False

    def value(self) -> str:
        self.flush()
        return self.buffer.getvalue().decode("utf-8", "backslashreplace")


def run_cli(*argv, timeout: float | None = 30.0) -> Run:
    """`bfs ARGV` in this process: exit code, stdout, stderr (BFS_DEBUG unset)."""
    from bfs_tools.cli import term
    from bfs_tools.cli.main import main

    out, err = _Sink(), _Sink()
    old_handler = None
    debug = os.environ.pop("BFS_DEBUG", None)
    term._console = term._err_console = None
    _reset_cli_state()
    if timeout:
        def on_alarm(signum, frame):
            raise Timeout(f"bfs {' '.join(map(str, argv))}: still running after {timeout} s")

        old_handler = signal.signal(signal.SIGALRM, on_alarm)
        signal.setitimer(signal.ITIMER_REAL, timeout)
    saved_pipe = signal.getsignal(signal.SIGPIPE)
    rc = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main([str(a) for a in argv])
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        if timeout:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old_handler)
        signal.signal(signal.SIGPIPE, saved_pipe)
        if debug is not None:
            os.environ["BFS_DEBUG"] = debug
        term._console = term._err_console = None
    return Run(rc, out.value(), err.value())


def _reset_cli_state() -> None:
    """Module state a command keeps for its process (a fresh process has none)."""
    files_cmd = sys.modules.get("bfs_tools.cli.files_cmd")
    damaged = getattr(files_cmd, "_DAMAGED", None)
    if isinstance(damaged, list):
        damaged.clear()
    elif damaged is not None:
        files_cmd._DAMAGED = False


# ---------------------------------------------------------------- normalising

_UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b")
_SECS = re.compile(r"\(\d+\.\d+ s\)")
_MS = re.compile(r"\b\d+\.\d+ ms\b")
_CSUM = re.compile(r"\b(csum|checksum|crc32c|crc64|xxhash)(\s*[=:]?\s*)(0x)?[0-9a-f]{6,16}\b")
_TIME_NS = re.compile(r"\b1[67]\d{17}\b")


def normalise(text: str, image: str | Path | None = None) -> str:
    """The corpus filter: what may differ between runs becomes a placeholder."""
    if image is not None:
        text = text.replace(str(image), "IMAGE")
    text = _UUID.sub("UUID", text)
    text = _SECS.sub("(T s)", text)
    text = _MS.sub("T ms", text)
    text = _CSUM.sub(lambda m: f"{m.group(1)}{m.group(2)}CSUM", text)
    text = _TIME_NS.sub("TIME_NS", text)
    return text


EXPECT_SEED = 4242


def corpus_runs(image, args=()) -> tuple[Run, Run]:
    """What the corpus records and replays: `check -y` then `check -n`, under a
    fixed seed and clock (a repair that makes a directory picks its hash seed)."""
    with deterministic(EXPECT_SEED):
        r1 = run_cli("check", "-y", *args, image)
        r2 = run_cli("check", "-n", *args, image)
    return r1, r2


def render(r: Run, image) -> str:
    """A run as recorded in expect.N: exit code, normalised stdout and stderr."""
    text = f"exit {r.rc}\n" + normalise(r.out, image)
    if r.err:
        text += "stderr:\n" + normalise(r.err, image)
    return text


# ---------------------------------------------------------------- the base image

@dataclass
class Manifest:
    """Files of the base image by path (snapshot views under their own path)."""

    files: dict[str, str] = field(default_factory=dict)     # path -> sha256 of contents
    inums: dict[str, int] = field(default_factory=dict)     # path -> inode number
    extra: dict = field(default_factory=dict)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _data(rng: random.Random, n: int) -> bytes:
    """n bytes of file data: distinct per call, but compressible (small fixtures)."""
    block = rng.randbytes(64)
    return (block * (n // 64 + 1))[:n]


def build_base(path: str | Path, *, seed: int = 1, many: int = 48, snapshot: bool = True,
               reflink: bool = True, subvolume: bool = True, close: bool = True):
    """Format `path` and fill it; returns the manifest (and the open fs if not close)."""
    from bfs_tools.fs.filesystem import Filesystem

    rng = random.Random(seed)
    path = str(path)
    if os.path.exists(path):
        os.unlink(path)
    r = run_cli("format", path, *FORMAT_ARGS, "--label", "corpus", timeout=None)
    if r.rc != 0:
        raise RuntimeError(f"format failed: {r}")
    fs = Filesystem.open(path, write=True)
    root = fs.root()
    reg = stat.S_IFREG | 0o644
    d_docs = fs.create(root, b"docs", stat.S_IFDIR | 0o755)
    fs.create(root, b"README", reg, data=b"bfs corpus image\n" * 3)
    fs.create(d_docs, b"a.txt", reg, data=_data(rng, 5000))
    fs.create(d_docs, b"b.txt", reg, data=b"inline file b\n" * 7)
    d_sub = fs.create(d_docs, b"sub", stat.S_IFDIR | 0o750)
    fs.create(d_sub, b"deep.bin", reg, data=_data(rng, 40000))
    h = fs.create(root, b"hard1", reg, data=_data(rng, 3000))
    fs.link(h, d_docs, b"hard2")
    fs.create(root, b"link", stat.S_IFLNK | 0o777, symlink=b"docs/a.txt")
    fs.create(root, b"fifo", stat.S_IFIFO | 0o644)
    fs.create(root, b"null", stat.S_IFCHR | 0o666, rdev=(1 << 8) | 3)
    x = fs.create(root, b"xattr.txt", reg, data=b"has xattrs\n")
    fs.setxattr(x, b"user.color", b"blue")
    fs.setxattr(x, b"user.shape", b"round" * 10)
    fs.setxattr(x, b"trusted.t", b"\x00\x01\x02")
    sp = fs.create(root, b"sparse", reg)
    fs.write(sp, 0, _data(rng, 2048), "sparse")
    fs.write(sp, 64 * 1024, _data(rng, 4096), "sparse")
    d_many = fs.create(root, b"many", stat.S_IFDIR | 0o755)
    for i in range(many):
        fs.create(d_many, b"f%03d" % i, reg, data=_data(rng, 40 + i))
    if reflink:
        from bfs_tools.remap import reflink_paths

        reflink_paths(fs, "/docs/sub/deep.bin", "/docs/deep.copy")
    if subvolume:
        from bfs_tools.snapshots.subvolume import create_subvolume

        create_subvolume(fs, "/vol")
        vol = fs.resolve("/vol").where
        fs.create(vol, b"in-vol.txt", reg, data=_data(rng, 6000))
    if snapshot:
        from bfs_tools.snapshots.subvolume import create_snapshot

        create_snapshot(fs, "/", "/snap")
        # after the snapshot: change one file in the live tree only
        a = fs.resolve("/docs/a.txt").where
        fs.write(a, 512, b"changed after the snapshot" * 20, "a.txt")
    if not close:
        return fs
    fs.close()
    return manifest(path)


def manifest(path: str | Path) -> Manifest:
    m = Manifest()
    tree, problems = read_tree(path)
    if problems:
        raise RuntimeError(f"base image does not read back: {problems}")
    for p, (inum, digest) in tree.items():
        m.files[p] = digest
        m.inums[p] = inum
    return m


def read_tree(path: str | Path, *, src_fs=None) -> tuple[dict[str, tuple[int, str]], list[str]]:
    """Every file, symlink and directory reachable from / (into subvolumes and
    snapshots): path -> (inum, sha256 of contents or "dir"/"special"), plus the
    problems met (read errors), bounded in count."""
    from bfs_tools.errors import BfsError
    from bfs_tools.fs.filesystem import Filesystem

    out: dict[str, tuple[int, str]] = {}
    problems: list[str] = []
    fs = src_fs or Filesystem.open(str(path))
    try:
        stack = [("", fs.root())]
        seen = set()
        while stack and len(out) < 100000:
            prefix, where = stack.pop()
            if (where.subvol, where.inum) in seen:
                problems.append(f"{prefix or '/'}: directory loop")
                continue
            seen.add((where.subvol, where.inum))
            try:
                entries = fs.readdir(where)
            except BfsError as e:
                problems.append(f"{prefix or '/'}: {e}")
                continue
            for e in entries:
                p = prefix + "/" + e.name.decode("utf-8", "surrogateescape")
                try:
                    ino = fs.inode(e.where)
                    if ino.is_dir:
                        out[p] = (e.where.inum, "dir")
                        stack.append((p, e.where))
                    elif ino.is_reg or ino.is_lnk:
                        out[p] = (e.where.inum, sha(fs.read_all(e.where, ino, p)))
                    else:
                        out[p] = (e.where.inum, f"special {ino.mode:o} {ino.rdev}")
                except BfsError as err:
                    problems.append(f"{p}: {err}")
    finally:
        if src_fs is None:
            fs.close()
    return out, problems


def lost(path: str | Path, expected: dict[str, str], touched: set[str]) -> list[str]:
    """Files of `expected` (path -> sha) that the damage did not touch but no
    longer read back byte-identical."""
    tree, _problems = read_tree(path)
    bad = []
    for p, digest in sorted(expected.items()):
        if p in touched or any(p.startswith(t.rstrip("/") + "/") for t in touched):
            continue
        got = tree.get(p)
        if got is None:
            bad.append(f"{p}: missing")
        elif got[1] != digest:
            bad.append(f"{p}: contents differ")
    return bad


# ---------------------------------------------------------------- nodes, raw

@dataclass
class NodeInfo:
    btree: int
    level: int
    sector: int
    node_seq: int
    gen: int
    min_key: tuple
    max_key: tuple
    keys: list[Key]
    parent_sector: int | None
    ptr_index: int | None      # index of the pointer in the parent (None: root)

    @property
    def offset(self) -> int:
        return self.sector * SECTOR


def open_ro(path) -> Store:
    return Store.open(str(path))


def nodes(path, btree: int | None = None) -> list[NodeInfo]:
    """Every btree node (parents before children) of a clean image."""
    out = []
    with open_ro(path) as store:
        bt = store.btrees
        for b in BtreeId:
            if btree is not None and b != btree:
                continue
            stack = [(bt.roots[b], None, None)]
            while stack:
                node, parent, idx = stack.pop()
                out.append(NodeInfo(b, node.level, node.sector, node.node_seq, node.gen,
                                    node.min_key, node.max_key, list(node.keys),
                                    parent.sector if parent is not None else None, idx))
                if node.level > 0:
                    for i in reversed(range(len(node.keys))):
                        stack.append((bt.child(node, i), node, i))
    return out


def find_node(path, btree: int, *, level: int = 0, contains=None, pick=0) -> NodeInfo:
    cands = [n for n in nodes(path, btree) if n.level == level
             and (contains is None or any(contains(k) for k in n.keys))]
    if not cands:
        raise RuntimeError(f"no {BtreeId(btree).name} node at level {level} matches")
    return cands[pick]


def store_params(path) -> dict:
    with open_ro(path) as store:
        sb = store.sb
        return {"magic64": sb.magic64(), "csum_type": sb.csum_type, "node_size": sb.btree_node_size,
                "block_size": sb.block_size, "bucket_size": sb.bucket_size, "sb": sb}


def read_raw(path, offset: int, length: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read(length)


def write_raw(path, offset: int, data: bytes) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def encode_node(*, btree: int, level: int, node_seq: int, min_key, max_key, keys: list[Key],
                magic64: int, csum_type: int, block_size: int, journal_seq: int = 1,
                header_changes: dict | None = None, reseal: bool = True,
                bset_changes: dict | None = None, raw_keys: bytes | None = None) -> bytes:
    """A node image: header + one bset with `keys` in the given order (not sorted)."""
    hfields = dict(csum=0, magic=BTREE_NODE_MAGIC ^ magic64, node_seq=node_seq, btree_id=btree,
                   level=level, pad=0, min_key_inode=min_key[0], min_key_offset=min_key[1],
                   min_key_snapshot=min_key[2], max_key_inode=max_key[0],
                   max_key_offset=max_key[1], max_key_snapshot=max_key[2])
    hfields.update(header_changes or {})
    head = bytearray(NodeHeader(**hfields).pack())
    if reseal:
        head[0:8] = checksum(csum_type, bytes(head[8:])).to_bytes(8, "little")
    body = raw_keys if raw_keys is not None else encode_keys(keys)
    bfields = dict(csum=0, magic=BSET_MAGIC ^ magic64, node_seq=hfields["node_seq"],
                   journal_seq=journal_seq, bytes=len(body), nkeys=len(keys))
    bfields.update(bset_changes or {})
    bhead = bytearray(BsetHeader(**bfields).pack())
    if reseal:
        bhead[0:8] = checksum(csum_type, bytes(bhead[8:]) + body).to_bytes(8, "little")
    raw = bytes(head) + bytes(bhead) + body
    return raw + b"\0" * (-len(raw) % block_size)


def rewrite_node(path, n: NodeInfo, *, keys: list[Key] | None = None, **kw) -> bytes:
    """Rewrite node `n` in place as one bset (same node_seq unless changed); the
    node slot's tail is zeroed so no older bset follows."""
    p = store_params(path)
    raw = encode_node(btree=n.btree, level=n.level, node_seq=n.node_seq, min_key=n.min_key,
                      max_key=n.max_key, keys=n.keys if keys is None else keys,
                      magic64=p["magic64"], csum_type=p["csum_type"],
                      block_size=p["block_size"], **kw)
    if len(raw) > p["node_size"]:
        raise RuntimeError("rewritten node does not fit")
    write_raw(path, n.offset, raw + b"\0" * (p["node_size"] - len(raw)))
    return raw


def node_header_size() -> tuple[int, int]:
    return NODE_HEADER_SIZE, BSET_HEADER_SIZE


def ptr_of(parent: NodeInfo, idx: int):
    return decode_ptr(parent.keys[idx])


# ---------------------------------------------------------------- keys via the engine

def put_keys(path, updates, *, deletes=(), journal: bool = False) -> None:
    """Write keys (btree, Key) and delete positions (btree, pos) without triggers:
    the state a missed or wrong trigger would leave. The image is closed clean."""
    with Store.open(str(path), write=True) as store:
        t = store.transaction()
        for btree, k in updates:
            t.update(btree, k)
        for btree, pos in deletes:
            t.delete(btree, pos)
        t.commit(run_triggers=False, journal=journal)


def get_key(path, btree: int, pos) -> Key | None:
    """The key at `pos`, read leniently (damaged keys are what we look for)."""
    with Store.open(str(path), lenient=True) as store:
        return store.btrees.get(btree, pos)


def keys_of(path, btree: int, start=None, end=None) -> list[Key]:
    with open_ro(path) as store:
        kw = {}
        if start is not None:
            kw["start"] = start
        if end is not None:
            kw["end"] = end
        return list(store.btrees.iter(btree, **kw))


def inum_of(path, p: str) -> int:
    from bfs_tools.fs.filesystem import Filesystem

    fs = Filesystem.open(str(path))
    try:
        return fs.resolve(p, follow=False).where.inum
    finally:
        fs.close()


def snapshot_of(path, subvol: int = 1) -> int:
    from bfs_tools.fs.filesystem import Filesystem

    fs = Filesystem.open(str(path))
    try:
        return fs.subvolume(subvol).snapshot
    finally:
        fs.close()


ROOT = ROOT_SNAPSHOT


def stderr_line_ok(err: str) -> bool:
    """Damage is reported as `bfs: error: ...` lines, never a traceback."""
    return "Traceback" not in err and "internal error" not in err


def python() -> str:
    return sys.executable
