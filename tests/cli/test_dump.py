"""`bfs dump btree|journal|alloc|usage|tree` and `bfs df`: text, JSON shapes, every
option, bad input. Content is made through the Python API (synthetic keys that
the engine validates but that do not form a consistent filesystem), so those
images live in tmp_path rather than `new_image` (whose images are checked).
"""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys

import pytest
from bfs_tools.formats.constants import U32_MAX
from bfs_tools.formats.ids import BtreeId, ChecksumType, KeyType

from bfs_tools.checksum import checksum
from bfs_tools.extents import Extent, extent_key
from bfs_tools.keys import Key
from bfs_tools.snapshots.values import Snapshot
from bfs_tools.store import Store
from tests.conftest import BFS, run_bfs
from tests.helpers import flip_byte

X = BtreeId.xattrs
SNAP_A = U32_MAX - 1
SNAP_B = U32_MAX - 2
BIG_INODE = 5000
NBIG = 3000


def xkey(inum: int, slot: int, snap: int, name: str, payload: bytes = b"v") -> Key:
    n = name.encode()
    val = bytes([0, len(n)]) + len(payload).to_bytes(2, "little") + n + payload
    return Key((inum, slot, snap), KeyType.xattr, val)


def populate(store: Store) -> None:
    """Two child snapshots of the root, xattr versions in each, many keys to make
    the xattrs btree grow a level, one data extent (a user bucket)."""
    t = store.transaction()
    t.update(BtreeId.snapshots, Snapshot(U32_MAX, children_0=SNAP_A, children_1=SNAP_B,
                                         tree=1).key())
    t.update(BtreeId.snapshots, Snapshot(SNAP_A, parent=U32_MAX, subvol=1, tree=1,
                                         depth=1).key())
    t.update(BtreeId.snapshots, Snapshot(SNAP_B, parent=U32_MAX, subvol=2, tree=1,
                                         depth=1).key())
    t.update(X, xkey(4096, 10, U32_MAX, "in-root"))
    t.update(X, xkey(4096, 10, SNAP_A, "in-a"))
    t.update(X, xkey(4096, 20, SNAP_B, "in-b"))
    t.update(X, xkey(4096, 30, U32_MAX, "shared"))
    t.update(X, Key((4096, 30, SNAP_A), KeyType.whiteout))
    t.commit()
    for batch in range(0, NBIG, 500):
        t = store.transaction()
        for i in range(batch, batch + 500):
            t.update(X, xkey(BIG_INODE, i, U32_MAX, f"big{i}", bytes(100)))
        t.commit()
    data = os.urandom(4096)
    sector, gen, granted = store.allocator.allocate_data(len(data))
    assert granted == len(data)
    store.dev.write(sector * 512, data)
    t = store.transaction()
    t.update(BtreeId.extents, extent_key((BIG_INODE, 8, U32_MAX), 8, Extent(
        sector, gen, ChecksumType.crc32c, 8, 0, checksum(ChecksumType.crc32c, data))))
    t.commit()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """clean: a populated, cleanly closed image; unclean: the same content left
    with a journal to replay (a log line, a flush entry, then an entry written
    after the last commit point)."""
    d = tmp_path_factory.mktemp("dump")
    clean = d / "clean.img"
    run_bfs("format", clean, "--size", "64M", "--btree-node-size", "16k")
    s = Store.open(str(clean), write=True)
    populate(s)
    s.close()
    unclean = d / "unclean.img"
    shutil.copy(clean, unclean)
    s = Store.open(str(unclean), write=True)
    s.journal.add_log("hello [bold]markup[/bold] \x1b[31mred")
    t = s.transaction()
    t.update(X, xkey(4096, 40, U32_MAX, "journ\x1b[2Jalled"))
    t.commit()
    s.commit()                      # commit point: a flush entry
    t = s.transaction()
    t.update(X, xkey(4096, 50, U32_MAX, "lost"))
    t.commit()
    s.journal.write_entry()         # reaches the journal, but after the commit point
    s.dev.close()                   # "crash": no close, no clean superblock
    return {"clean": clean, "unclean": unclean, "dir": d}


def jlines(res) -> list[dict]:
    return [json.loads(line) for line in res.text.splitlines()]


# ---------------------------------------------------------------------------- dump btree


def test_dump_btree_text_and_json(bfs, formatted):
    img = formatted()
    text = bfs("dump", "btree", img, "inodes").text.splitlines()
    assert len(text) == 1 and text[0].startswith("inode 0:4096:U32_MAX: mode 40755")
    objs = jlines(bfs("dump", "btree", img, "inodes", "--json"))
    assert len(objs) == 1
    o = objs[0]
    assert o["btree"] == "inodes" and o["type"] == "inode"
    assert o["pos"] == {"inode": 0, "offset": 4096, "snapshot": U32_MAX}
    assert o["value"]["mode"] == "40755"
    alloc = bfs("dump", "btree", img, "alloc").text.splitlines()
    assert alloc[0] == "alloc POS_MIN: gen 0 superblock dirty_sectors 128"
    # name is case-insensitive; an empty btree prints nothing
    assert bfs("dump", "btree", img, "SUBVOLUMES").text.startswith("subvolume 0:1:0:")
    assert bfs("dump", "btree", img, "reflink").out == b""


def test_dump_btree_all_versions_by_default(bfs, images):
    img = images["clean"]
    lines = bfs("dump", "btree", img, "xattrs", "--end", "4096:U64_MAX").text.splitlines()
    assert lines == [
        f"xattr 4096:10:{SNAP_A}: user.in-a (1 bytes)",
        "xattr 4096:10:U32_MAX: user.in-root (1 bytes)",
        f"xattr 4096:20:{SNAP_B}: user.in-b (1 bytes)",
        f"whiteout 4096:30:{SNAP_A}",
        "xattr 4096:30:U32_MAX: user.shared (1 bytes)",
    ]
    assert bfs("dump", "btree", img, "xattrs", "--end", "4096:U64_MAX",
               "--all-snapshots").text.splitlines() == lines


@pytest.mark.parametrize("snap,expect", [
    (str(SNAP_A), [f"4096:10:{SNAP_A} user.in-a"]),
    (hex(SNAP_B), ["4096:10:U32_MAX user.in-root", f"4096:20:{SNAP_B} user.in-b",
                   "4096:30:U32_MAX user.shared"]),
    ("U32_MAX", ["4096:10:U32_MAX user.in-root", "4096:30:U32_MAX user.shared"]),
])
def test_dump_btree_snapshot_view(bfs, images, snap, expect):
    r = bfs("dump", "btree", images["clean"], "xattrs", "--snapshot", snap, "--end", "4096:U64_MAX")
    got = [" ".join(line.split()[1:3]).rstrip(":").replace(": ", " ") for line in r.text.splitlines()]
    assert got == expect
    objs = jlines(bfs("dump", "btree", images["clean"], "xattrs", "--snapshot", snap, "--end",
                      "4096:U64_MAX", "--json"))
    assert len(objs) == len(expect) and all(o["type"] == "xattr" for o in objs)


def test_dump_btree_start_end(bfs, images):
    img = images["clean"]
    r = bfs("dump", "btree", img, "xattrs", "--start", f"{BIG_INODE}:100", "--end",
            f"{BIG_INODE}:0x6f:U32_MAX", "--json")
    offsets = [o["pos"]["offset"] for o in jlines(r)]
    assert offsets == list(range(100, 112))
    # --end without a snapshot includes every snapshot of that (inode, offset)
    r = bfs("dump", "btree", img, "xattrs", "--start", "4096:10", "--end", "4096:10")
    assert len(r.text.splitlines()) == 2
    # with a snapshot field, exactly up to it
    r = bfs("dump", "btree", img, "xattrs", "--start", "4096:10", "--end", f"4096:10:{SNAP_A}")
    assert len(r.text.splitlines()) == 1
    # whole btree: every key
    assert len(bfs("dump", "btree", img, "xattrs").text.splitlines()) == NBIG + 5
    assert bfs("dump", "btree", img, "xattrs", "--start", "POS_MAX").out == b""


def test_dump_btree_levels(bfs, images):
    img = images["clean"]
    nodes = jlines(bfs("dump", "btree", img, "xattrs", "--level", "1", "--json"))
    assert len(nodes) == 1
    root = nodes[0]
    assert root["level"] == 1 and root["btree"] == "xattrs"
    assert root["min_key"] == {"inode": 0, "offset": 0, "snapshot": 0}
    assert root["max_key"]["snapshot"] == U32_MAX
    assert root["nr_keys"] == len(root["keys"]) > 1
    assert all(k["type"] == "btree_ptr" for k in root["keys"])
    assert 0 < root["bytes"] <= root["capacity"] < 16384 and root["sector"] > 0
    leaves = jlines(bfs("dump", "btree", img, "xattrs", "--level", "0", "--json"))
    assert len(leaves) == root["nr_keys"]
    assert sum(n["nr_keys"] for n in leaves) == NBIG + 5
    for prev, cur in zip(leaves, leaves[1:], strict=False):
        assert (prev["max_key"]["inode"], prev["max_key"]["offset"]) <= (
            cur["min_key"]["inode"], cur["min_key"]["offset"])
    # each leaf's max key is the position of its pointer in the root
    assert [n["max_key"] for n in leaves] == [k["pos"] for k in root["keys"]]
    text = bfs("dump", "btree", img, "xattrs", "--level", "0").text.splitlines()
    headers = [line for line in text if line.startswith("node ")]
    assert len(headers) == len(leaves)
    assert headers[0].startswith("node level 0 POS_MIN..") and "% full)" in headers[0]
    assert all(line.startswith(("node ", "  xattr ", "  whiteout ")) for line in text)
    # a range reads only the nodes overlapping it, and keys inside it
    part = jlines(bfs("dump", "btree", img, "xattrs", "--level", "0", "--json",
                      "--start", f"{BIG_INODE}:1000", "--end", f"{BIG_INODE}:1001"))
    assert len(part) in (1, 2)
    assert [k["pos"]["offset"] for n in part for k in n["keys"]] == [1000, 1001]
    part_root = jlines(bfs("dump", "btree", img, "xattrs", "--level", "1", "--json",
                           "--start", f"{BIG_INODE}:1000", "--end", f"{BIG_INODE}:1001"))
    assert len(part_root) == 1 and len(part_root[0]["keys"]) == len(part)


@pytest.mark.parametrize("args,needle", [
    (["nosuchtree"], "is not one of"),
    (["nosuchtree"], "snapshot_trees"),
    (["xattrs", "--start", "1:x"], "invalid position"),
    (["xattrs", "--end", "1"], "invalid position"),
    (["xattrs", "--start", "1:2:3:4"], "invalid position"),
    (["xattrs", "--start", "1:2:4294967296"], "out of range"),
    (["xattrs", "--start", "5:0", "--end", "4:0"], "after"),
    (["alloc", "--snapshot", "1"], "has no snapshots"),
    (["xattrs", "--snapshot", "0"], "out of range"),
    (["xattrs", "--snapshot", "abc"], "not a snapshot id"),
    (["xattrs", "--snapshot", "5", "--all-snapshots"], "mutually exclusive"),
    (["xattrs", "--snapshot", "5", "--level", "0"], "--level"),
    (["xattrs", "--level", "9"], "--level"),
    (["xattrs", "--level", "-1"], "--level"),
    (["inodes", "--level", "3"], "only level 0"),
    ([], "Missing argument"),
])
def test_dump_btree_usage_errors(bfs, formatted, args, needle):
    img = formatted()
    r = bfs("dump", "btree", img, *args, check_rc=2)
    assert needle in r.errtext, r.errtext
    assert r.errtext.startswith("bfs: error: ") and "Traceback" not in r.errtext
    if args:
        assert r.errtext.count("\n") == 1
    assert r.out == b""


def test_dump_btree_unknown_snapshot(bfs, formatted):
    r = bfs("dump", "btree", formatted(), "xattrs", "--snapshot", "12345", check_rc=1)
    assert r.errtext == "bfs: error: snapshot 12345 does not exist\n"


# ---------------------------------------------------------------------------- every command


COMMANDS = [
    ["dump", "btree", "{img}", "xattrs"],
    ["dump", "btree", "{img}", "xattrs", "--level", "0"],
    ["dump", "journal", "{img}"],
    ["dump", "alloc", "{img}"],
    ["dump", "usage", "{img}"],
    ["dump", "tree", "{img}", "xattrs"],
    ["df", "{img}"],
]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c[:2]) + " " + " ".join(c[3:]))
def test_bad_images(bfs, tmp_path, cmd):
    missing = tmp_path / "missing.img"
    r = bfs(*[str(missing) if a == "{img}" else a for a in cmd], check_rc=6)
    assert r.errtext.startswith("bfs: error: ") and r.errtext.count("\n") == 1
    junk = tmp_path / "junk.img"
    junk.write_bytes(os.urandom(1 << 20))
    r = bfs(*[str(junk) if a == "{img}" else a for a in cmd], check_rc=3)
    assert "not a bfs image" in r.errtext and r.errtext.count("\n") == 1
    assert "Traceback" not in r.errtext and r.out == b""
    r = bfs(*[str(tmp_path) if a == "{img}" else a for a in cmd], check_rc=None)
    assert r.rc in (1, 3, 6) and r.errtext.count("\n") == 1


@pytest.mark.parametrize("cmd", COMMANDS + [
    ["dump", "btree", "{img}", "xattrs", "--json"], ["dump", "journal", "{img}", "--json"],
    ["dump", "alloc", "{img}", "--json"], ["dump", "usage", "{img}", "--json"],
    ["df", "{img}", "--json"]], ids=lambda c: " ".join(c[:2]) + " " + " ".join(c[3:]))
def test_read_only_image_untouched(bfs, images, tmp_path, cmd):
    """Every command works on a read-only file and changes nothing, even when the
    image needs recovery."""
    img = tmp_path / "ro.img"
    shutil.copy(images["unclean"], img)
    before = img.read_bytes()
    os.chmod(img, 0o444)
    try:
        r = bfs(*[str(img) if a == "{img}" else a for a in cmd])
        assert r.out and r.err == b""
    finally:
        os.chmod(img, 0o644)
    assert img.read_bytes() == before


@pytest.mark.damaged
def test_damaged_node_is_one_error_line(bfs, images, tmp_path):
    img = tmp_path / "bad.img"
    shutil.copy(images["clean"], img)
    leaves = jlines(bfs("dump", "btree", img, "xattrs", "--level", "0", "--json"))
    victim = leaves[len(leaves) // 2]
    flip_byte(img, victim["sector"] * 512 + 20)       # inside the checksummed node header
    for cmd in (["dump", "btree", img, "xattrs"], ["dump", "btree", img, "xattrs", "--json"],
                ["dump", "btree", img, "xattrs", "--level", "0"], ["dump", "tree", img, "xattrs",
                                                                    "--max-children", "1000"]):
        r = bfs(*cmd, check_rc=3)
        assert r.errtext.startswith("bfs: error: ") and r.errtext.count("\n") == 1, r
        assert f"sector {victim['sector']}" in r.errtext
    # the other btrees still dump
    bfs("dump", "btree", img, "inodes")
    bfs("df", img)


# ---------------------------------------------------------------------------- journal


def test_dump_journal_clean_image_shows_old_entries(bfs, formatted):
    img = formatted()
    d = json.loads(bfs("dump", "journal", img, "--json").out)
    assert set(d) == {"journal", "entries", "damaged"}
    j = d["journal"]
    assert j["clean"] and j["replay"] is None and j["blacklist"] == [] and j["clean_seq"] >= 1
    assert len(j["buckets"]) >= 4 and j["bucket_size"] == 65536
    assert d["damaged"] == [] and d["entries"]
    e = d["entries"][-1]
    assert set(e) == {"seq", "last_seq", "flush", "status", "bucket", "ring_index", "offset",
                      "bytes", "entries"}
    assert e["flush"] and e["status"] == "done" and e["bucket"] == j["buckets"][e["ring_index"]]
    types = {x["type"] for x in e["entries"]}
    assert {"btree_keys", "btree_root", "datetime"} <= types
    roots = [x for x in e["entries"] if x["type"] == "btree_root"]
    assert sorted(r["btree"] for r in roots) == sorted(b.name for b in BtreeId)
    assert all(r["key"]["type"] == "btree_ptr" for r in roots)
    keys = [x for x in e["entries"] if x["type"] == "btree_keys"]
    assert all(k["keys"] and k["keys"][0]["btree"] == k["btree"] for k in keys)
    dt = next(x for x in e["entries"] if x["type"] == "datetime")
    assert dt["time_ns"] > 0 and dt["time"].endswith("UTC")
    text = bfs("dump", "journal", img).text
    assert "state: clean" in text and "[done]" in text
    assert "btree_root inodes level 0: btree_ptr POS_MAX: sector" in text
    assert "  btree_keys inodes (1 keys)\n    inode 0:4096:U32_MAX: mode 40755" in text


def test_dump_journal_unclean_image(bfs, images):
    img = images["unclean"]
    d = json.loads(bfs("dump", "journal", img, "--json").out)
    j = d["journal"]
    assert not j["clean"] and j["replay"] is not None
    flush = [e for e in d["entries"] if e["flush"] and e["status"] == "replay"]
    assert flush and flush[-1]["seq"] == j["replay"]["last"]
    by_status = {}
    for e in d["entries"]:
        by_status.setdefault(e["status"], []).append(e)
    assert set(by_status) <= {"replay", "blacklisted", "done", "ignored"}
    assert "done" in by_status and "replay" in by_status
    logs = [x for e in d["entries"] for x in e["entries"] if x["type"] == "log"]
    assert logs == [{"type": "log", "text": "hello [bold]markup[/bold] \x1b[31mred"}]
    text = bfs("dump", "journal", img).text
    assert "state: not clean; an open replays seqs" in text
    assert "[replay]" in text and "[done]" in text
    assert "log: hello [bold]markup[/bold] \\x1b[31mred" in text       # escaped, no markup
    assert "\x1b" not in text
    # the replayed key is visible to dump btree; the lost one is not
    r = bfs("dump", "btree", img, "xattrs", "--start", "4096:40", "--end", "4096:50")
    assert r.text.splitlines() == ["xattr 4096:40:U32_MAX: user.journ\\x1b[2Jalled (1 bytes)"]
    j = jlines(bfs("dump", "btree", img, "xattrs", "--start", "4096:40", "--end", "4096:40",
                   "--json"))
    assert j[0]["value"]["name"] == "user.journ\x1b[2Jalled"


def test_dump_journal_entry_after_commit_point_is_blacklisted(bfs, images):
    d = json.loads(bfs("dump", "journal", images["unclean"], "--json").out)
    lost = [e for e in d["entries"] if any(
        k["pos"]["inode"] == 4096 and k["pos"]["offset"] == 50
        for x in e["entries"] if x["type"] == "btree_keys" for k in x["keys"])]
    assert len(lost) == 1 and lost[0]["status"] == "blacklisted" and not lost[0]["flush"]
    rb = d["journal"]["recovery_blacklist"]
    assert rb["start"] <= lost[0]["seq"] <= rb["end"]
    assert "[blacklisted]" in bfs("dump", "journal", images["unclean"]).text


@pytest.mark.damaged
def test_dump_journal_needs_no_btree(bfs, images, tmp_path):
    """With a btree root destroyed, every command that needs that btree fails
    naming it (roots are read when first used: df, which needs only the
    accounting, still works), and the journal dumps."""
    img = tmp_path / "noroot.img"
    shutil.copy(images["clean"], img)
    sup = json.loads(bfs("dump", "super", img, "--json").out)
    root = next(r for r in sup["clean_state"]["roots"] if r["btree"] == "inodes")
    flip_byte(img, root["sector"] * 512 + 20)
    r = bfs("dump", "btree", img, "inodes", check_rc=3)
    assert r.errtext.count("\n") == 1 and "inodes" in r.errtext
    r = bfs("ls", img, "/", check_rc=3)
    assert r.errtext.count("\n") == 1 and "btree inodes" in r.errtext
    bfs("df", img)
    d = json.loads(bfs("dump", "journal", img, "--json").out)
    assert d["entries"] and d["journal"]["clean"]


@pytest.mark.damaged
def test_dump_journal_lists_damaged_entries(bfs, formatted, tmp_path):
    img = tmp_path / "j.img"
    shutil.copy(formatted(), img)
    d = json.loads(bfs("dump", "journal", img, "--json").out)
    e = d["entries"][0]
    flip_byte(img, e["bucket"] * d["journal"]["bucket_size"] + e["offset"] + 100)
    d2 = json.loads(bfs("dump", "journal", img, "--json").out)
    assert [x["seq"] for x in d2["entries"]] == [x["seq"] for x in d["entries"][1:]]
    assert len(d2["damaged"]) == 1
    assert f"seq {e['seq']}" in d2["damaged"][0]["message"]
    assert "bad checksum" in d2["damaged"][0]["message"]
    text = bfs("dump", "journal", img).text
    assert "damaged: journal bucket" in text and "1 damaged" in text


# ---------------------------------------------------------------------------- alloc


def test_dump_alloc(bfs, images):
    img = images["clean"]
    d = json.loads(bfs("dump", "alloc", img, "--json").out)
    assert set(d) == {"buckets", "free_ranges", "summary"}
    s = d["summary"]
    assert s["nbuckets"] == 1024 and s["bucket_size"] == 65536
    by_type = {}
    for b in d["buckets"]:
        assert set(b) == {"bucket", "gen", "data_type", "dirty_sectors"}
        by_type.setdefault(b["data_type"], []).append(b)
    assert {"superblock", "journal", "btree", "user"} <= set(by_type)
    assert [b["bucket"] for b in by_type["superblock"]] == [0, 1, 2, 1023]
    assert by_type["user"][0]["dirty_sectors"] == 8 and by_type["user"][0]["gen"] >= 1
    assert s["data_types"]["user"] == {"buckets": 1, "sectors": 8}
    assert s["data_types"]["btree"]["buckets"] == len(by_type["btree"])
    free = sum(r["buckets"] for r in d["free_ranges"])
    assert free == s["free_buckets"] == 1024 - len(d["buckets"]) == 1024 - s["used_buckets"]
    assert all(r["end"] - r["start"] + 1 == r["buckets"] for r in d["free_ranges"])
    text = bfs("dump", "alloc", img).text
    assert "free ranges (" in text and "dirty_sectors" in text
    assert "bucket map" not in text and "\x1b" not in text            # not a terminal


def run_on_tty(*args, columns: int = 100) -> str:
    """Run bfs with stdout on a pseudo-terminal; returns what it printed."""
    master, slave = pty.openpty()
    env = dict(os.environ, COLUMNS=str(columns), TERM="xterm-256color")
    env.pop("NO_COLOR", None)
    proc = subprocess.Popen([BFS, *map(str, args)], stdout=slave, stderr=subprocess.PIPE,
                            env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.wait(timeout=60) == 0, proc.stderr.read()
    return b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.skipif(sys.platform != "linux", reason="pty")
def test_dump_alloc_map_on_a_terminal(images):
    out = run_on_tty("dump", "alloc", images["clean"])
    assert "bucket map (one cell = bucket)" in out
    assert "\x1b[" in out                                            # coloured
    assert "superblock" in out and "journal" in out and "free" in out


def test_bucket_map_cells():
    from bfs_tools.dump.alloc import AllocView, BucketInfo, bucket_map, map_cells

    v = AllocView(nbuckets=10, bucket_size=65536, first_bucket=1)
    v.buckets = [BucketInfo(0, 0, 1, 128), BucketInfo(1, 0, 2, 128), BucketInfo(5, 1, 4, 8),
                 BucketInfo(9, 0, 1, 128)]
    per, cells = map_cells(v, 100)
    assert per == 1 and [c[0] for c in cells] == [1, 2, 0, 0, 0, 4, 0, 0, 0, 1]
    per, cells = map_cells(v, 4)
    assert per == 3 and cells == [(1, False), (4, False), (0, True), (1, True)]
    plain = bucket_map(v).plain
    assert "SJ...U...S" in plain and "one cell = bucket" in plain
    big = AllocView(nbuckets=1 << 23, bucket_size=2 << 20, first_bucket=1)
    big.buckets = [BucketInfo(i, 0, 3, 4096) for i in range(0, 1 << 23, 1 << 16)]
    text = bucket_map(big, width=80, max_rows=16).plain
    rows = [line for line in text.splitlines() if set(line) <= set(".SJBUsjbu?")]
    assert 1 <= len(rows) <= 16 and max(map(len, rows)) <= 78
    assert "b" in text and "lower case: partly free" in text


# ---------------------------------------------------------------------------- usage & df


def test_dump_usage(bfs, images):
    img = images["clean"]
    d = json.loads(bfs("dump", "usage", img, "--json").out)
    assert set(d) == {"bucket_size", "nbuckets", "data_types", "inodes", "btrees", "snapshots",
                      "reflink", "other"}
    assert set(d["data_types"]) == {"superblock", "journal", "btree", "user"}
    assert d["data_types"]["superblock"] == {"buckets": 4, "sectors": 512}
    assert d["data_types"]["user"] == {"buckets": 1, "sectors": 8}
    assert d["inodes"] == 1
    assert set(d["btrees"]) == {b.name for b in BtreeId}
    assert d["btrees"]["xattrs"] > d["btrees"]["inodes"] == 32     # 16k nodes: 32 sectors each
    assert d["snapshots"] == [{"snapshot": U32_MAX, "sectors": 8}]
    assert d["reflink"] == {"indirect_sectors": 0, "referenced_sectors": 0}
    assert d["other"] == []
    # the counters agree with the alloc keys
    a = json.loads(bfs("dump", "alloc", img, "--json").out)["summary"]["data_types"]
    assert a == d["data_types"]
    text = bfs("dump", "usage", img).text
    assert "inodes: 1" in text and "U32_MAX" in text and "4 KiB" in text
    assert "xattrs" in text and "reflink: indirect_sectors 0" in text


def test_df(bfs, formatted, images):
    img = formatted()
    d = json.loads(bfs("df", img, "--json").out)
    assert set(d) == {"image", "bucket_size", "buckets", "size", "used", "free", "use_percent",
                      "data_types", "inodes", "reflink"}
    assert d["reflink"] == {"shared_bytes": 0, "exclusive_bytes": 0, "referenced_bytes": 0}
    b = d["buckets"]
    assert b["total"] == 1024 and b["usable"] == b["total"] - b["reserved"]
    assert b["free"] == b["usable"] - b["used"]
    assert b["used"] == d["data_types"]["btree"]["buckets"] + d["data_types"]["user"]["buckets"]
    assert d["size"] == b["usable"] * d["bucket_size"]
    assert d["used"] + d["free"] == d["size"] and d["inodes"] == 1
    # the free buckets are exactly those of the freespace index
    alloc = json.loads(bfs("dump", "alloc", img, "--json").out)
    assert b["free"] == alloc["summary"]["free_buckets"]
    text = bfs("df", img).text.splitlines()
    assert text[0].split() == ["Filesystem", "Size", "Used", "Avail", "Use%"]
    assert text[1].split()[0] == str(img) and text[1].endswith("%")
    assert any(line.startswith("btree") for line in text)
    populated = json.loads(bfs("df", images["clean"], "--json").out)
    assert populated["data_types"]["user"] == {"buckets": 1, "sectors": 8, "bytes": 4096}
    assert populated["buckets"]["used"] == (populated["data_types"]["btree"]["buckets"]
                                            + populated["data_types"]["user"]["buckets"])


def test_df_reads_only_the_accounting_btree(images, monkeypatch):
    from bfs_tools.btree.tree import Btrees
    from bfs_tools.dump.usage import df_report, read_usage

    s = Store.open(str(images["clean"]))
    touched = set()
    real_child = Btrees.child

    def child(self, node, idx):
        touched.add(node.btree_id)
        return real_child(self, node, idx)

    monkeypatch.setattr(Btrees, "child", child)
    rep = df_report(read_usage(s.btrees), s.sb)
    s.close()
    assert touched <= {BtreeId.accounting}
    assert rep["inodes"] == 1


def test_df_is_in_the_command_list(bfs):
    assert "df" in bfs("--help").text


# ---------------------------------------------------------------------------- tree


def test_dump_tree(bfs, images, formatted):
    img = images["clean"]
    lines = bfs("dump", "tree", img, "xattrs").text.splitlines()
    assert lines[0].startswith("btree xattrs: 2 levels, node size 16384")
    assert "level 1 POS_MIN..POS_MAX" in lines[1]
    leaves = [line for line in lines if "leaf " in line]
    nleaves = len(jlines(bfs("dump", "btree", img, "xattrs", "--level", "0", "--json")))
    assert nleaves > 16
    assert len(leaves) == 16                                   # capped: 15 first + the last
    assert any(f"... {nleaves - 16} more" in line for line in lines)
    assert "% full" in lines[2] and "sector" in lines[2]
    assert "\x1b" not in "".join(lines)
    full = bfs("dump", "tree", img, "xattrs", "--max-children", "1000").text
    assert full.count("leaf ") == nleaves and "more" not in full
    capped = bfs("dump", "tree", img, "xattrs", "--max-children", "1000", "--max-nodes", "5").text
    assert capped.count("leaf ") == 4 and f"... {nleaves - 4} more (output capped" in capped
    one = bfs("dump", "tree", formatted(), "inodes").text.splitlines()
    assert one[0] == "btree inodes: 1 level, node size 65536 bytes" and len(one) == 2
    assert "leaf POS_MIN..POS_MAX  1 key, 0% full" in one[1]
    bfs("dump", "tree", img, "nosuch", check_rc=2)


@pytest.mark.skipif(sys.platform != "linux", reason="pty")
def test_dump_tree_on_a_terminal(images):
    out = run_on_tty("dump", "tree", images["clean"], "xattrs")
    assert "btree xattrs" in out and "leaf" in out and "\x1b[" in out


# ---------------------------------------------------------------------------- a real filesystem


def test_dumps_of_a_populated_filesystem(bfs, new_image, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "small").write_bytes(b"hello")
    (src / "big").write_bytes(os.urandom(300_000))
    (src / "sub" / "esc\x1b[31mname").write_bytes(b"x")
    img = new_image()
    bfs("format", img, "--size", "64M", "--source", src)
    dirents = bfs("dump", "btree", img, "dirents").text
    assert "'big' -> inum" in dirents and "'sub' -> inum" in dirents
    assert "\x1b" not in dirents and "esc\\x1b[31mname" in dirents
    assert bfs("dump", "btree", img, "dirents", "--snapshot", "U32_MAX").text == dirents
    ext = jlines(bfs("dump", "btree", img, "extents", "--json"))
    sectors = sum(e["size"] for e in ext if e["type"] == "extent")
    assert sectors == -(-300_000 // 4096) * 8          # whole 4 KiB blocks
    u = json.loads(bfs("dump", "usage", img, "--json").out)
    assert u["inodes"] == 5
    assert u["data_types"]["user"]["sectors"] == sectors
    assert u["snapshots"] == [{"snapshot": U32_MAX, "sectors": sectors}]
    df = json.loads(bfs("df", img, "--json").out)
    assert df["data_types"]["user"]["buckets"] >= 1 and df["inodes"] == 5
    alloc = json.loads(bfs("dump", "alloc", img, "--json").out)["summary"]["data_types"]
    assert alloc["user"]["sectors"] == sectors
