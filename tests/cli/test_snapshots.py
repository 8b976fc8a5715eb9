"""`bfs snapshot` and `bfs subvolume` from the command line (bcachefs subvol
tests, xfstests' snapshot cases): snapshot, change either side with the file
commands, read every version back; list (tree, table, JSON), dump by snapshot,
read-only snapshots, bad input, a busy image, exhausted ids, an interrupted
deletion finished by the next writable command or by `check -y`, and space
coming back. `bfs check -n` runs after every step (and again through conftest).

The heavier model-based tests are in tests/unit/test_snapshots_model.py.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest

U32_MAX = 0xFFFFFFFF


def blob(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def clean(bfs, img) -> None:
    """`bfs check -n`, run in this process (the same passes, without the cost of
    starting a process after every step; conftest runs the command at the end)."""
    from bfs_tools.fsck.context import CheckContext
    from bfs_tools.fsck.runner import finish, open_for_check, run_passes

    ctx = CheckContext(open_for_check(str(img), "no"), "no")
    run_passes(ctx)
    finish(ctx)
    assert ctx.exit_code() == 0, [(f.error.name, f.location, f.message) for f in ctx.findings]


@contextmanager
def opened(img):
    """The image opened for writing through the Python API, to set up a tree fast."""
    from bfs_tools.fs.filesystem import Filesystem

    fs = Filesystem.open(str(img), write=True)
    try:
        yield Api(fs)
    except BaseException:
        fs.abort()
        raise
    fs.close()


class Api:
    def __init__(self, fs):
        self.fs = fs

    def put(self, path: str, data: bytes) -> None:
        from bfs_tools.errors import NotFoundError

        try:
            r = self.fs.resolve(path)
        except NotFoundError:
            parent, name = self.fs.resolve_parent(path)
            self.fs.create(parent.where, name, 0o100644, data=data)
            return
        self.fs.replace_contents(r.where, [data], path)

    def mkdir(self, path: str) -> None:
        parent, name = self.fs.resolve_parent(path)
        self.fs.create(parent.where, name, 0o40755)

    def snapshot(self, src: str, dst: str, ro: bool = False) -> None:
        from bfs_tools.snapshots.subvolume import create_snapshot

        create_snapshot(self.fs, src, dst, read_only=ro)

    def subvolume(self, path: str) -> None:
        from bfs_tools.snapshots.subvolume import create_subvolume

        create_subvolume(self.fs, path)


SB_VOLATILE = {"seq", "write_time_ns", "journal_seq_reserved", "offset"}


def sha(img: Path) -> str:
    """The image's contents, except what every writable open refreshes in the
    superblock copies (sequence number, write time, journal seq reservation): a
    refused command leaves this unchanged."""
    from bfs_tools.io.device import FileDevice
    from bfs_tools.superblock import read_superblock

    raw = bytearray(img.read_bytes())
    with FileDevice(str(img)) as dev:
        sb = read_superblock(dev).sb
    for off in sb.offsets:
        raw[off:off + 4096] = bytes(4096)
    fields = {k: v for k, v in vars(sb).items() if k not in SB_VOLATILE}
    return hashlib.sha256(bytes(raw) + repr(sorted(fields.items())).encode()).hexdigest()


def put(bfs, img, tmp_path: Path, path: str, data: bytes) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(data)
    bfs("put", img, src, path)


def snapshots_json(bfs, img) -> list[dict]:
    return json.loads(bfs("snapshot", "list", img, "--json").out)


def subvols_json(bfs, img) -> dict[str, dict]:
    return {s["path"]: s for s in json.loads(bfs("subvolume", "list", img, "--json").out)}


@pytest.fixture
def img(formatted):
    return formatted("64M")


# ---------------------------------------------------------------------- round trips


def test_snapshot_then_change_both_sides(bfs, img, tmp_path):
    """put over a file, rm, mv, ln, ln -s, mkdir on the original and on the
    snapshot; every version reads back exactly, and get -r of the snapshot is the
    tree it had."""
    big, big2, small = blob(1, 700_000), blob(2, 650_000), b"small\n"
    with opened(img) as fs:
        fs.put("/big", big)
        fs.put("/small", small)
        fs.mkdir("/d")
        fs.put("/d/f", blob(3, 9000))
        fs.mkdir("/snaps")
    bfs("ln", img, "/big", "/d/big-link")
    bfs("snapshot", "create", img, "/", "/snaps/s1")
    clean(bfs, img)
    # the original changes
    put(bfs, img, tmp_path, "/big", big2)                  # overwrite (through one link)
    bfs("rm", img, "/small")
    bfs("mv", img, "/d/f", "/f-moved")
    bfs("ln", img, "-s", "/f-moved", "/sym")
    clean(bfs, img)
    # the snapshot changes, independently
    put(bfs, img, tmp_path, "/snaps/s1/small", b"SMALL, in the snapshot\n")
    bfs("rm", img, "/snaps/s1/d/big-link")
    bfs("mkdir", img, "/snaps/s1/new-dir")
    bfs("mv", img, "/snaps/s1/d", "/snaps/s1/new-dir/d")
    clean(bfs, img)
    # every version
    assert bfs("cat", img, "/d/big-link").out == big2       # hard link: same inode
    assert bfs("cat", img, "/snaps/s1/big").out == big
    assert bfs("cat", img, "/sym").out == blob(3, 9000)
    # the snapshot's whole tree, as files on the host
    out = tmp_path / "out"
    bfs("get", img, "/snaps/s1", out, "-r")
    got = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert got == {"big": big, "small": b"SMALL, in the snapshot\n",
                   "new-dir/d/f": blob(3, 9000)}
    # its copy of /snaps is empty: it does not show the snapshot dirents it inherits
    assert {str(p.relative_to(out)) for p in out.rglob("*") if p.is_dir()} == {
        "new-dir", "new-dir/d", "snaps"}
    assert bfs("ls", img, "/").out.split() == [b"big", b"d", b"f-moved", b"snaps", b"sym"]
    # deleting it leaves the original exactly as it was
    bfs("snapshot", "delete", img, "/snaps/s1")
    clean(bfs, img)
    out2 = tmp_path / "out2"
    bfs("get", img, "/", out2, "-r")
    got = {str(p.relative_to(out2)): p.read_bytes() for p in out2.rglob("*") if p.is_file()}
    assert got == {"big": big2, "d/big-link": big2, "f-moved": blob(3, 9000)}
    assert os.readlink(out2 / "sym") == "/f-moved"


def test_nested_snapshots_list_and_usage(bfs, img):
    """Snapshot of a snapshot, 3 deep, a read-only one and a plain subvolume:
    `snapshot list` (table and JSON) shows ids, parents, subvolumes, paths, the
    read-only flag and own/shared usage; `subvolume list` the subvolumes."""
    with opened(img) as fs:
        fs.put("/f", blob(4, 400_000))
        fs.mkdir("/snaps")
    bfs("snapshot", "create", img, "/", "/snaps/a")
    with opened(img) as fs:
        fs.put("/snaps/a/f", blob(5, 100_000))               # a's own data
    bfs("snapshot", "create", img, "/snaps/a", "/snaps/b", "--read-only")
    bfs("snapshot", "create", img, "/snaps/b", "/snaps/c")
    bfs("subvolume", "create", img, "/vol")
    with opened(img) as fs:
        fs.put("/snaps/c/g", blob(6, 50_000))
        fs.put("/vol/v", blob(7, 20_000))
    clean(bfs, img)
    assert bfs("cat", img, "/snaps/c/f").out == blob(5, 100_000)

    snaps = snapshots_json(bfs, img)
    by_path = {s["path"]: s for s in snaps if s["path"]}
    assert set(by_path) == {"/", "/snaps/a", "/snaps/b", "/snaps/c", "/vol"}
    ids = {s["id"]: s for s in snaps}
    for s in snaps:
        assert set(s) >= {"id", "parent", "children", "tree", "depth", "subvolume", "path",
                          "read_only", "is_snapshot", "deleted", "own_bytes", "shared_bytes"}
        if s["parent"]:
            assert s["parent"] > s["id"] and s["id"] in ids[s["parent"]]["children"]
            assert s["depth"] == ids[s["parent"]]["depth"] + 1
        if not s["children"]:
            assert s["subvolume"], s        # every leaf belongs to a subvolume
    assert by_path["/snaps/b"]["read_only"] is True
    assert by_path["/snaps/a"]["read_only"] is False
    assert by_path["/"]["is_snapshot"] is False and by_path["/snaps/c"]["is_snapshot"] is True
    assert by_path["/vol"]["tree"] != by_path["/"]["tree"]
    # c descends from b, which descends from a
    assert by_path["/snaps/c"]["depth"] == 3 and by_path["/snaps/a"]["depth"] == 2
    assert ids[ids[by_path["/snaps/c"]["parent"]]["parent"]]["id"] == by_path["/snaps/a"][
        "parent"]
    # usage: a wrote 100 KB of its own before b was taken: that data now sits at an
    # interior node that b and c share; c's own is its 50 KB file
    assert by_path["/snaps/c"]["own_bytes"] >= 50_000
    assert by_path["/snaps/c"]["shared_bytes"] >= 400_000 + 100_000
    assert by_path["/"]["own_bytes"] == 0 and by_path["/"]["shared_bytes"] >= 400_000
    assert by_path["/vol"]["own_bytes"] >= 20_000 and by_path["/vol"]["shared_bytes"] == 0
    # the table
    lines = bfs("snapshot", "list", img).text.splitlines()
    assert lines[0].split() == ["ID", "PARENT", "SUBVOL", "RO", "OWN", "SHARED", "PATH"]
    assert any(line.endswith("/snaps/b") and " ro " in line for line in lines)
    assert any(line.split()[0] == "U32_MAX" for line in lines[1:])
    assert len(lines) == len(snaps) + 1
    subs = subvols_json(bfs, img)
    assert set(subs) == {"/", "/snaps/a", "/snaps/b", "/snaps/c", "/vol"}
    assert subs["/snaps/b"]["read_only"] and subs["/snaps/b"]["is_snapshot"]
    assert not subs["/vol"]["is_snapshot"]
    under = json.loads(bfs("subvolume", "list", img, "/snaps", "--json").out)
    assert {s["path"] for s in under} == {"/snaps/a", "/snaps/b", "/snaps/c"}
    # moving a snapshot moves its path
    bfs("mv", img, "/snaps/c", "/c-moved")
    clean(bfs, img)
    assert "/c-moved" in {s["path"] for s in snapshots_json(bfs, img)}


def test_dump_btree_by_snapshot(bfs, img):
    """dump btree shows every version with its snapshot id; --snapshot ID shows the
    view from one snapshot (nearest version, whiteouts hiding older ones)."""
    with opened(img) as fs:
        fs.put("/f", b"original contents\n")
        fs.put("/gone", b"deleted in the snapshot\n")
        fs.mkdir("/snaps")
        fs.snapshot("/", "/snaps/s")
        fs.put("/snaps/s/f", b"snapshot contents\n")
    bfs("rm", img, "/snaps/s/gone")
    snaps = {s["path"]: s["id"] for s in snapshots_json(bfs, img) if s["path"]}
    sid, rid = snaps["/snaps/s"], snaps["/"]
    text = bfs("dump", "btree", img, "extents").text
    assert ":U32_MAX " in text and f":{sid} " in text
    # the snapshot's view: its own version of f, nothing of the file it deleted
    view = [json.loads(x) for x in bfs("dump", "btree", img, "extents", "--json", "--snapshot",
                                       str(sid)).text.splitlines()]
    assert [k["pos"]["snapshot"] for k in view] == [sid]
    assert bytes.fromhex(view[0]["value"]["data"]).startswith(b"snapshot contents")
    # the original's view: both files, from the shared ancestor
    view = [json.loads(x) for x in bfs("dump", "btree", img, "extents", "--json", "--snapshot",
                                       str(rid)).text.splitlines()]
    assert len(view) == 2 and {k["pos"]["snapshot"] for k in view} == {U32_MAX}
    names = bfs("dump", "btree", img, "dirents", "--snapshot", str(sid)).text
    assert "'f'" in names and "'gone'" not in names
    res = bfs("dump", "btree", img, "extents", "--snapshot", "12345", check_rc=None)
    assert res.rc != 0 and b"12345" in res.err and b"Traceback" not in res.err


# ---------------------------------------------------------------------- read-only snapshots


def test_read_only_snapshot_refuses_every_write(bfs, formatted, tmp_path):
    img = formatted("16M")
    with opened(img) as fs:
        fs.put("/f", blob(8, 30_000))
        fs.mkdir("/d")
        fs.mkdir("/snaps")
    bfs("snapshot", "create", img, "/", "/snaps/ro", "--read-only")
    host = tmp_path / "host.bin"
    host.write_bytes(b"new data")
    before = sha(img)
    attempts = [
        ("put", img, host, "/snaps/ro/new"),
        ("put", img, host, "/snaps/ro/f"),                  # overwrite
        ("mkdir", img, "/snaps/ro/newdir"),
        ("rm", img, "/snaps/ro/f"),
        ("rm", img, "/snaps/ro/d", "-r"),
        ("mv", img, "/snaps/ro/f", "/snaps/ro/g"),
        ("ln", img, "/snaps/ro/f", "/snaps/ro/hard"),
        ("ln", img, "-s", "/f", "/snaps/ro/sym"),
        ("reflink", img, "/f", "/snaps/ro/refl"),
        ("cp", img, "/f", "/snaps/ro/copy"),
        ("snapshot", "create", img, "/", "/snaps/ro/inner"),
        ("subvolume", "create", img, "/snaps/ro/sub"),
    ]
    for args in attempts:
        res = bfs(*args, check_rc=None)
        assert res.rc == 1, (args, res)
        assert b"read-only" in res.err and res.err.count(b"\n") == 1, (args, res)
        assert sha(img) == before, args
    clean(bfs, img)
    # reading from it, snapshotting it and deleting it still work
    bfs("reflink", img, "/snaps/ro/f", "/from-ro")
    bfs("snapshot", "create", img, "/snaps/ro", "/snaps/rw")
    put(bfs, img, tmp_path, "/snaps/rw/f", b"writable copy")
    bfs("snapshot", "delete", img, "/snaps/ro")
    clean(bfs, img)
    assert bfs("cat", img, "/from-ro").out == blob(8, 30_000)
    assert bfs("cat", img, "/snaps/rw/f").out == b"writable copy"


# ---------------------------------------------------------------------- bad input


def test_bad_input_changes_nothing(bfs, formatted):
    img = formatted("16M")
    with opened(img) as fs:
        fs.put("/f", b"x")
        fs.mkdir("/d")
        fs.mkdir("/snaps")
        fs.snapshot("/", "/snaps/s")
        fs.subvolume("/vol")
        fs.subvolume("/vol/inner")
    before = sha(img)
    cases = [
        (("snapshot", "create", img, "/d", "/s2"), 1, "not a subvolume root"),
        (("snapshot", "create", img, "/f", "/s2"), 1, "not a subvolume root"),
        (("snapshot", "create", img, "/nope", "/s2"), 1, "no such file"),
        (("snapshot", "create", img, "/", "/d"), 1, "exists"),
        (("snapshot", "create", img, "/", "/snaps/s"), 1, "exists"),
        (("snapshot", "create", img, "/", "/nope/s2"), 1, "no such file"),
        (("snapshot", "delete", img, "/"), 1, "root subvolume"),
        (("subvolume", "delete", img, "/"), 1, "root subvolume"),
        (("snapshot", "delete", img, "/d"), 1, "not a subvolume"),
        (("snapshot", "delete", img, "/vol"), 1, "not a snapshot"),
        (("subvolume", "delete", img, "/vol"), 1, "contains subvolume"),
        (("rm", img, "/snaps/s", "-r"), 1, "subvolume"),
        (("snapshot", "create", img, "/"), 2, ""),
    ]
    for args, rc, msg in cases:
        res = bfs(*args, check_rc=None)
        assert res.rc == rc, (args, res)
        assert msg.encode() in res.err and b"Traceback" not in res.err, (args, res)
        assert sha(img) == before, args
    clean(bfs, img)


def test_busy_image(bfs, formatted):
    """Another process holds the image: writers get exit 5 and change nothing."""
    img = formatted("16M")
    with opened(img) as fs:
        fs.mkdir("/snaps")
        fs.snapshot("/", "/snaps/s")
    before = sha(img)
    with open(img, "rb") as holder:
        fcntl.flock(holder, fcntl.LOCK_SH)              # a reader
        for args in (("snapshot", "delete", img, "/snaps/s"),
                     ("snapshot", "create", img, "/", "/snaps/t")):
            res = bfs(*args, check_rc=None)
            assert res.rc == 5 and b"busy" in res.err, (args, res)
        assert snapshots_json(bfs, img)                 # readers share the image
        fcntl.flock(holder, fcntl.LOCK_EX)              # a writer
        res = bfs("subvolume", "delete", img, "/snaps/s", check_rc=None)
        assert res.rc == 5 and b"busy" in res.err, res
        fcntl.flock(holder, fcntl.LOCK_UN)
    assert sha(img) == before
    bfs("snapshot", "delete", img, "/snaps/s")
    clean(bfs, img)


def test_snapshot_ids_exhausted(bfs, formatted, monkeypatch):
    """A subvolume on snapshot id 2 leaves only id 1: a snapshot needs two ids, so it
    fails with a clear error (exit 4, as bcachefs' ENOSPC) and changes nothing; a
    subvolume needs one and succeeds; the next one fails the same way."""
    from bfs_tools.snapshots import subvolume as sv

    img = formatted("16M")
    with monkeypatch.context() as m:
        m.setattr(sv, "_lowest_snapshot_id", lambda trans: 3)   # as if ids had run down
        with opened(img) as fs:
            fs.subvolume("/low")
    clean(bfs, img)
    ids = {s["path"]: s["id"] for s in snapshots_json(bfs, img)}
    assert ids["/low"] == 2
    before = sha(img)
    for src in ("/", "/low"):
        res = bfs("snapshot", "create", img, src, "/s", check_rc=None)
        assert res.rc == 4 and b"snapshot ids exhausted" in res.err, res
        assert res.err.count(b"\n") == 1 and sha(img) == before
    bfs("subvolume", "create", img, "/last")
    assert {s["path"]: s["id"] for s in snapshots_json(bfs, img)}["/last"] == 1
    before = sha(img)
    res = bfs("subvolume", "create", img, "/one-more", check_rc=None)
    assert res.rc == 4 and b"snapshot ids exhausted" in res.err, res
    assert sha(img) == before
    clean(bfs, img)


# ---------------------------------------------------------------------- interrupted deletion


_KILL_DURING_CLEANUP = """
import os, sys
from bfs_tools.fs.filesystem import Filesystem
from bfs_tools.snapshots import cleanup, subvolume
cleanup.BATCH = 2
real, done = cleanup._run, [0]
def run(store, batch, fn):
    if done[0] == int(sys.argv[3]):
        os._exit(9)                       # killed: no close, nothing pending flushed
    real(store, batch, fn)
    done[0] += 1
cleanup._run = run
fs = Filesystem.open(sys.argv[1], write=True)
subvolume.delete_subvolume(fs, sys.argv[2])
fs.close()
"""


@pytest.mark.parametrize("finish", ["check -y", "next write"])
def test_interrupted_deletion(bfs, img, finish):
    """`snapshot delete` killed after 3 committed batches of its cleanup: the
    snapshot is gone from the namespace, `check -n` is clean (a deletion the
    superblock says is in progress is what a crash leaves, not damage), and
    `check -y` or the next writable command finishes it; everything else is
    intact and the space comes back."""
    files = {f"/f{i}": blob(10 + i, 5000 + 30_000 * i) for i in range(4)}
    with opened(img) as fs:
        for path, data in files.items():
            fs.put(path, data)
        fs.mkdir("/snaps")
        fs.snapshot("/", "/snaps/a")
        fs.snapshot("/", "/snaps/b")
        for i, path in enumerate(files):
            fs.put("/snaps/a" + path, blob(20 + i, 40_000))
            fs.put("/snaps/b" + path, blob(30 + i, 7000))
    df_before = json.loads(bfs("df", img, "--json").out)
    proc = subprocess.run([sys.executable, "-c", _KILL_DURING_CLEANUP, str(img), "/snaps/a",
                           "3"], capture_output=True)
    assert proc.returncode == 9, proc.stderr
    res = bfs("check", "-n", img, "--json", check_rc=0)
    found = {f["error"] for f in json.loads(res.out)["findings"]}
    assert found == set(), found
    assert bfs("ls", img, "/snaps").out.split() == [b"b"]
    if finish == "check -y":
        bfs("check", "-y", img, check_rc=0)
    else:
        bfs("mkdir", img, "/after")
    clean(bfs, img)
    with opened(img) as fs:
        for i, (path, data) in enumerate(files.items()):
            for p, want in ((path, data), ("/snaps/b" + path, blob(30 + i, 7000))):
                r = fs.fs.resolve(p)
                assert fs.fs.read_all(r.where, r.inode, p) == want, p
    assert len(snapshots_json(bfs, img)) == 3                  # b, the root, their parent
    after = json.loads(bfs("df", img, "--json").out)
    assert after["data_types"]["user"]["sectors"] < df_before["data_types"]["user"]["sectors"]


# ---------------------------------------------------------------------- space


def test_space_returns(bfs, img):
    """After deleting every snapshot, the user data and inode counters are what they
    were before the first one; allocated buckets differ by btree nodes at most."""
    with opened(img) as fs:
        fs.put("/f", blob(40, 500_000))
        fs.put("/g", blob(41, 3000))
        fs.mkdir("/snaps")
    df0 = json.loads(bfs("df", img, "--json").out)
    with opened(img) as fs:
        for i in range(3):
            fs.snapshot("/", f"/snaps/s{i}")
            fs.put(f"/snaps/s{i}/f", blob(50 + i, 300_000))
            fs.put(f"/snaps/s{i}/new", blob(60 + i, 200_000))
    for i in (1, 0, 2):
        bfs("snapshot", "delete", img, f"/snaps/s{i}")
    clean(bfs, img)
    df2 = json.loads(bfs("df", img, "--json").out)
    assert df2["data_types"]["user"] == df0["data_types"]["user"]
    assert df2["inodes"] == df0["inodes"]
    assert abs(df2["used"] - df0["used"]) <= 4 * df0["bucket_size"]
    usage = json.loads(bfs("dump", "usage", img, "--json").out)
    assert len(usage["snapshots"]) <= 1


def test_snapshot_help(bfs):
    for group in ("snapshot", "subvolume"):
        out = bfs(group, "--help").text
        assert all(cmd in out for cmd in ("create", "delete", "list"))


@pytest.mark.damaged
def test_subvolume_on_interior_snapshot(bfs, formatted):
    """A subvolume pointing at an interior snapshot (damage): snapshot create says
    so in one line (exit 3), no traceback; check finds it."""
    from bfs_tools.formats.ids import BtreeId

    from bfs_tools.snapshots.values import decode_subvolume
    from bfs_tools.store import Store

    img = formatted("16M")
    with opened(img) as fs:
        fs.mkdir("/snaps")
        fs.snapshot("/", "/snaps/s")
    with Store.open(str(img), write=True) as s:
        sv = decode_subvolume(s.btrees.get(BtreeId.subvolumes, (0, 2, 0)))
        sv.snapshot = U32_MAX
        t = s.transaction()
        t.update(BtreeId.subvolumes, sv.key())
        t.commit()
    res = bfs("snapshot", "create", img, "/snaps/s", "/s2", check_rc=None)
    assert res.rc == 3 and b"interior" in res.err and b"Traceback" not in res.err, res
    assert bfs("check", "-n", img, check_rc=None).rc == 4


def test_snapshot_list_tree_on_a_terminal(bfs, formatted):
    """On a terminal `snapshot list` draws the tree; names are never rich markup."""
    import pty

    img = formatted("16M")
    with opened(img) as fs:
        fs.mkdir("/[bold]x")
        fs.snapshot("/", "/[bold]x/s", ro=True)
        fs.snapshot("/[bold]x/s", "/s2")
    master, slave = pty.openpty()
    from tests.conftest import BFS

    proc = subprocess.Popen([BFS, "snapshot", "list", str(img)],
                            stdout=slave, stderr=slave,
                            env=dict(os.environ, COLUMNS="160", NO_COLOR="1"))
    proc.wait()
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    text = out.decode()
    assert proc.returncode == 0, text
    lines = [line.rstrip() for line in text.splitlines() if line.strip()]
    assert lines[0].startswith("U32_MAX  interior")
    assert any("subvol 2 /[bold]x/s ro" in line for line in lines)
    assert any(line.lstrip("│ ").startswith(("├── ", "└── ")) and "subvol 3 /s2" in line
               for line in lines)
    assert len(lines) == 5
