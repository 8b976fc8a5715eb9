"""Bad input reaching the storage engine: damaged btree nodes and journals.

Each case damages one structure of a small image (re-sealing checksums through
the format declarations where the point is to get past them) and reads the
whole image back. The oracle: a CorruptionError/FormatError whose message
names the btree and the key range or journal seq concerned (and, for
CorruptionError, the fsck error id) — never another exception type, never a
hang (each read runs under an alarm).
"""

from __future__ import annotations

import signal
from contextlib import contextmanager

import pytest
from bfs_tools.formats.constants import BTREE_NODE_MAGIC
from bfs_tools.formats.fsck_errors import BY_NAME as ERR
from bfs_tools.formats.ids import BtreeId, KeyType

from bfs_tools.btree.node import NODE_HEADER_SIZE, BsetHeader, Node, NodeHeader, encode_full
from bfs_tools.btree.ptr import decode_ptr, make_ptr_key, ptr_min_key
from bfs_tools.checksum import checksum
from bfs_tools.errors import CorruptionError, FormatError
from bfs_tools.io.crash import Torn, build_state
from bfs_tools.io.device import MemoryDevice, RecordingDevice, WriteOp
from bfs_tools.journal.entries import JsetHeader
from bfs_tools.journal.reader import plan_replay, scan_journal
from bfs_tools.keys import Key, fmt_pos
from bfs_tools.store import Store
from bfs_tools.superblock import RootEntry, write_superblock
from tests.engine_checks import X, keys_of, mkdev, xkey

pytestmark = pytest.mark.damaged


class Hang(Exception):
    pass


@contextmanager
def deadline(seconds: int = 20):
    def on_alarm(signum, frame):
        raise Hang(f"no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def read_everything(dev: MemoryDevice) -> None:
    """Open read-only and visit every key of every btree."""
    s = Store.open(dev)
    for b in BtreeId:
        for _ in s.btrees.iter(b):
            pass
    s.close()


def expect_damage(dev: MemoryDevice, *fragments: str, err: str | None = None,
                  read=read_everything) -> FormatError:
    with deadline():
        with pytest.raises(FormatError) as info:
            read(dev)
    e = info.value
    msg = str(e)
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"
    if err is not None:
        assert isinstance(e, CorruptionError) and e.err_id == ERR[err].id, (msg, e)
    return e


# ---------------------------------------------------------------------------
# btree nodes


@pytest.fixture(scope="module")
def tree_image() -> MemoryDevice:
    """A clean image whose xattrs btree has three levels (4 KiB nodes)."""
    dev = mkdev(16 << 20, node=4096, bucket=16384, block=512)
    s = Store.open(dev, write=True)
    t = s.transaction()
    for i in range(4000):
        t.update(X, xkey(i, bytes(60)))
    t.commit()
    s.close()
    s = Store.open(dev)
    assert s.btrees.roots[X].level >= 2
    return dev


def nodes(dev: MemoryDevice, level: int, btree: int = X) -> list[Node]:
    s = Store.open(dev)
    return [n for n in s.btrees.walk_nodes(btree) if n.level == level]


def sb_of(dev: MemoryDevice):
    return Store.open(dev).sb


def rewrite_node(dev: MemoryDevice, node: Node, keys: list[Key], *, level: int | None = None,
                 min_key=None, max_key=None) -> None:
    """Write `node`'s slot again (same node_seq, checksums re-sealed) holding
    `keys` in one bset, whatever their order or types; the rest of the slot
    is zeroed so no appended bset survives."""
    sb = sb_of(dev)
    n = Node(node.btree_id, node.level if level is None else level,
             node.min_key if min_key is None else min_key,
             node.max_key if max_key is None else max_key, list(keys))
    n.node_seq = node.node_seq
    raw = encode_full(n, sb.magic64(), sb.csum_type, sb.block_size, 1)
    dev.write(node.sector * 512, raw + bytes(sb.btree_node_size - len(raw)))


def node_where(node: Node) -> str:
    return f"[{fmt_pos(node.min_key)}, {fmt_pos(node.max_key)}]"


def test_node_header_checksum(tree_image):
    dev = tree_image.clone()
    leaf = nodes(dev, 0)[5]
    off = leaf.sector * 512 + 20          # node_seq, inside the checksummed header
    dev.write(off, bytes([dev.read(off, 1)[0] ^ 0x40]))
    expect_damage(dev, "btree xattrs", node_where(leaf), "checksum",
                  err="btree_node_unreadable")


def test_first_bset_checksum(tree_image):
    dev = tree_image.clone()
    leaf = nodes(dev, 0)[7]
    off = leaf.sector * 512 + NODE_HEADER_SIZE + BsetHeader.SIZE + 100   # inside a key
    dev.write(off, bytes([dev.read(off, 1)[0] ^ 0x01]))
    expect_damage(dev, "btree xattrs", node_where(leaf), "first bset damaged",
                  err="btree_node_unreadable")


def test_appended_bset_checksum():
    """A committed bset after the first is damaged: a crash can only tear
    bsets of seqs that get blacklisted, so this is corruption, not a crash."""
    dev = mkdev(16 << 20, node=16384, bucket=65536, block=512)
    s = Store.open(dev, write=True)
    t = s.transaction()
    for i in range(60):
        t.update(X, xkey(i, bytes(40)))
    t.commit()
    s.close()
    s = Store.open(dev, write=True)
    t = s.transaction()
    t.update(X, xkey(7, b"appended"))
    t.commit()
    s.close()
    root = nodes(dev, 0)[0]
    assert root.bsets >= 2
    sb = sb_of(dev)
    off, bsets = NODE_HEADER_SIZE, []
    while True:
        b = BsetHeader.unpack(dev.read(root.sector * 512 + off, BsetHeader.SIZE))
        if b.node_seq != root.node_seq:
            break
        bsets.append((off, b))
        end = off + BsetHeader.SIZE + b.bytes
        off = end + (-end % sb.block_size)
    off, last = bsets[-1]
    assert len(bsets) == root.bsets and last.nkeys >= 1
    dev.write(root.sector * 512 + off + BsetHeader.SIZE + 20, b"\xff")   # inside its key
    expect_damage(dev, "btree xattrs", "bad checksum", err="btree_bset_bad_csum")


def test_keys_out_of_order(tree_image):
    dev = tree_image.clone()
    leaf = nodes(dev, 0)[3]
    keys = list(leaf.keys)
    keys[2], keys[3] = keys[3], keys[2]
    rewrite_node(dev, leaf, keys)
    expect_damage(dev, "btree xattrs", node_where(leaf), "out of order",
                  fmt_pos(keys[3].pos), err="btree_node_keys_unsorted")


def test_key_outside_the_node_range(tree_image):
    dev = tree_image.clone()
    leaf = nodes(dev, 0)[3]
    keys = list(leaf.keys) + [xkey(999_999)]
    rewrite_node(dev, leaf, keys)
    expect_damage(dev, "btree xattrs", "outside the node's range",
                  err="btree_node_keys_unsorted")


@pytest.mark.parametrize("ktype", [KeyType.inode, KeyType.btree_ptr, 200])
def test_key_type_not_allowed(tree_image, ktype):
    dev = tree_image.clone()
    leaf = nodes(dev, 0)[4]
    keys = list(leaf.keys)
    k = keys[1]
    keys[1] = Key(k.pos, ktype, k.val)
    rewrite_node(dev, leaf, keys)
    expect_damage(dev, "btree xattrs", node_where(leaf), f"at {fmt_pos(k.pos)}",
                  err="key_type_not_allowed")


def test_interior_node_with_a_leaf_key(tree_image):
    dev = tree_image.clone()
    inner = nodes(dev, 1)[1]
    keys = list(inner.keys)
    keys[0] = xkey(keys[0].pos[1]).copy(pos=keys[0].pos)
    rewrite_node(dev, inner, keys)
    expect_damage(dev, "btree xattrs level 1", node_where(inner), err="key_type_not_allowed")


def test_key_value_overruns_its_bset(tree_image):
    dev = tree_image.clone()
    leaf = nodes(dev, 0)[2]
    sb = sb_of(dev)
    base = leaf.sector * 512
    head = NodeHeader.unpack(dev.read(base, NODE_HEADER_SIZE))
    bset = BsetHeader.unpack(dev.read(base + NODE_HEADER_SIZE, BsetHeader.SIZE))
    body = bytearray(dev.read(base + NODE_HEADER_SIZE + BsetHeader.SIZE, bset.bytes))
    body[0:2] = (0xFFFF).to_bytes(2, "little")     # first key's val_len
    hdr = bytearray(BsetHeader(0, bset.magic, head.node_seq, bset.journal_seq, len(body),
                               bset.nkeys).pack())
    hdr[0:8] = checksum(sb.csum_type, bytes(hdr[8:]) + bytes(body)).to_bytes(8, "little")
    dev.write(base + NODE_HEADER_SIZE, bytes(hdr) + bytes(body))
    expect_damage(dev, "btree xattrs", node_where(leaf), "overruns")


def test_bset_length_beyond_the_node(tree_image):
    dev = tree_image.clone()
    leaf = nodes(dev, 0)[2]
    sb = sb_of(dev)
    base = leaf.sector * 512 + NODE_HEADER_SIZE
    bset = BsetHeader.unpack(dev.read(base, BsetHeader.SIZE))
    hdr = bytearray(BsetHeader(bset.csum, bset.magic, bset.node_seq, bset.journal_seq,
                               1 << 30, bset.nkeys).pack())
    dev.write(base, bytes(hdr))
    assert sb.btree_node_size < 1 << 30
    expect_damage(dev, "btree xattrs", node_where(leaf), err="btree_node_unreadable")


def _point_child(dev, parent: Node, idx: int, target: Node, *, level: int | None = None,
                 sector: int | None = None) -> None:
    """Make parent's idx-th pointer point at `target` (or at `sector`), keeping
    the pointer's own key range; `level` defaults to what the parent expects."""
    keys = list(parent.keys)
    p = decode_ptr(keys[idx])
    keys[idx] = make_ptr_key(keys[idx].pos, ptr_min_key(p),
                             target.sector if sector is None else sector,
                             target.node_seq, target.gen,
                             parent.level - 1 if level is None else level)
    rewrite_node(dev, parent, keys)


@pytest.mark.parametrize("forged_level", [True, False])
def test_pointer_cycle_to_an_ancestor(tree_image, forged_level):
    """A level-1 node points at the root (its ancestor): a cycle."""
    dev = tree_image.clone()
    s = Store.open(dev)
    root = s.btrees.roots[X]
    inner = nodes(dev, 1)[0]
    _point_child(dev, inner, 0, root, level=None if forged_level else root.level)
    expect_damage(dev, "btree xattrs", "level", err="btree_node_bad_level")


def test_pointer_cycle_to_itself(tree_image):
    dev = tree_image.clone()
    inner = nodes(dev, 1)[2]
    _point_child(dev, inner, 1, inner)
    expect_damage(dev, "btree xattrs level 0", "level 1", err="btree_node_bad_level")


def test_two_parents_one_child(tree_image):
    """Two pointers at one node (a DAG): the second one's key range differs."""
    dev = tree_image.clone()
    inner = nodes(dev, 1)[0]
    s = Store.open(dev)
    first_leaf = s.btrees.child(s.btrees.child(s.btrees.roots[X], 0), 0)
    _point_child(dev, inner, 1, first_leaf)
    expect_damage(dev, "btree xattrs level 0", "range", err="btree_node_bad_range")


def test_root_pointing_at_itself():
    """A two-level tree whose root's child pointer is the root: bounded, clear."""
    dev = mkdev(16 << 20, node=4096, bucket=16384, block=512)
    s = Store.open(dev, write=True)
    t = s.transaction()
    for i in range(200):
        t.update(X, xkey(i, bytes(60)))
    t.commit()
    s.close()
    root = Store.open(dev).btrees.roots[X]
    assert root.level == 1
    _point_child(dev, root, 0, root)
    expect_damage(dev, "btree xattrs level 0", "level 1", err="btree_node_bad_level")


@pytest.mark.parametrize("where", ["past_end", "last_sector", "zero"])
def test_pointer_outside_the_device(tree_image, where):
    dev = tree_image.clone()
    inner = nodes(dev, 1)[1]
    sector = {"past_end": (dev.size // 512) * 4 + 7, "last_sector": dev.size // 512 - 1,
              "zero": 0}[where]
    _point_child(dev, inner, 2, inner, sector=sector)
    expect_damage(dev, "btree xattrs level 0", f"sector {sector}", "outside the device",
                  err="btree_node_unreadable")


def test_stale_pointer_node_seq(tree_image):
    dev = tree_image.clone()
    inner = nodes(dev, 1)[1]
    s = Store.open(dev)
    leaf = s.btrees.child(s.btrees.child(s.btrees.roots[X], 1), 3)
    keys = list(inner.keys)
    p = decode_ptr(keys[3])
    keys[3] = make_ptr_key(keys[3].pos, ptr_min_key(p), p.sector, p.node_seq ^ 2, p.gen, 0)
    rewrite_node(dev, inner, keys)
    expect_damage(dev, "btree xattrs level 0", node_where(leaf), "node_seq",
                  err="btree_node_seq_mismatch")


def test_short_pointer_value(tree_image):
    dev = tree_image.clone()
    inner = nodes(dev, 1)[1]
    keys = list(inner.keys)
    keys[4] = Key(keys[4].pos, KeyType.btree_ptr, keys[4].val[:10])
    rewrite_node(dev, inner, keys)
    expect_damage(dev, "btree xattrs level 1", "btree_ptr at", "10-byte value",
                  err="key_bad_value")


def test_root_deeper_than_the_maximum(tree_image):
    dev = tree_image.clone()
    s = Store.open(dev)
    sb = s.sb
    root = s.btrees.roots[X]
    from bfs_tools.keys import encode_key

    for r in sb.clean.roots:
        if r.btree_id == X:
            r.level = 200
            r.key = encode_key(make_ptr_key(root.max_key, root.min_key, root.sector,
                                            root.node_seq, root.gen, 200))
    dev.writable = True
    write_superblock(dev, sb)
    expect_damage(dev, "btree xattrs level 200", "maximum depth", err="btree_node_bad_level",
                  read=Store.open)


def test_root_pointer_outside_the_device(tree_image):
    dev = tree_image.clone()
    sb = sb_of(dev)
    from bfs_tools.keys import encode_key

    sb.clean.roots = [r if r.btree_id != X else RootEntry(
        X, 2, encode_key(make_ptr_key((2**64 - 1, 2**64 - 1, 2**32 - 1), (0, 0, 0),
                                      2**60, 1, 0, 2))) for r in sb.clean.roots]
    write_superblock(dev, sb)
    expect_damage(dev, "btree xattrs", "outside the device", err="btree_node_unreadable",
                  read=Store.open)


def test_node_of_another_filesystem(tree_image):
    """Same layout, other magic: the node is not this filesystem's."""
    dev = tree_image.clone()
    leaf = nodes(dev, 0)[1]
    sb = sb_of(dev)
    raw = bytearray(dev.read(leaf.sector * 512, NODE_HEADER_SIZE))
    raw[8:16] = (BTREE_NODE_MAGIC ^ 12345).to_bytes(8, "little")
    raw[0:8] = checksum(sb.csum_type, bytes(raw[8:])).to_bytes(8, "little")
    dev.write(leaf.sector * 512, bytes(raw))
    expect_damage(dev, "btree xattrs", node_where(leaf), "magic", err="btree_node_unreadable")


# ---------------------------------------------------------------------------
# journal


def unclean_image(*, after_commit: int = 0):
    """An image left by a crash: 5 journalled transactions since the last
    clean state (entries written without a flush as the open entry fills),
    then a commit point, then `after_commit` more transactions, then the crash.
    Returns (device, the model at the commit point)."""
    dev = mkdev(16 << 20, node=16384, bucket=16384, block=512)
    s = Store.open(dev, write=True)
    t = s.transaction()
    for i in range(150):
        t.update(X, xkey(i, bytes(80)))
    t.commit()
    s.close()
    # overwrites of existing keys, same sizes: journalled leaf updates only
    s = Store.open(dev, write=True)
    model = keys_of(s)
    n = 0
    for _ in range(5):
        t = s.transaction()
        for _ in range(40):
            k = xkey(n % 150, n.to_bytes(4, "little") * 20)
            t.update(X, k)
            model[k.pos] = k.val
            n += 1
        t.commit()
    s.commit()
    committed = dict(model)
    for _ in range(after_commit):
        t = s.transaction()
        for _ in range(40):
            t.update(X, xkey(n % 150, b"after" * 10))
            n += 1
        t.commit()
    s.journal.write_entry()   # what is journalled after the commit reaches the ring
    crashed = dev.clone()
    s.abort()
    return crashed, committed


def journal_plan(dev):
    sb = sb_of(dev)
    scan = scan_journal(dev, buckets=sb.journal_buckets, bucket_size=sb.bucket_size,
                        block_size=sb.block_size, magic64=sb.magic64(), csum_type=sb.csum_type)
    from bfs_tools.journal.blacklist import Blacklist

    plan = plan_replay(scan, base_seq=sb.clean.journal_seq if sb.clean else 0,
                       reserved=sb.journal_seq_reserved, blacklist=Blacklist(sb.blacklist))
    return sb, scan, plan


def jset_addr(sb, j) -> int:
    return sb.journal_buckets[j.ring_idx] * sb.bucket_size + j.offset


def reseal_jset(dev, sb, j, **changes) -> None:
    """Rewrite jset `j`'s header fields and seal its checksum again."""
    addr = jset_addr(sb, j)
    h = JsetHeader.unpack(dev.read(addr, JsetHeader.SIZE))
    body = dev.read(addr + JsetHeader.SIZE, h.bytes)
    h = h._replace(csum=0, **changes)
    raw = bytearray(h.pack())
    raw[0:8] = checksum(sb.csum_type, bytes(raw[8:]) + body).to_bytes(8, "little")
    dev.write(addr, bytes(raw))


def test_unclean_image_replays():
    """The control case: the unclean image opens at its commit point."""
    dev, committed = unclean_image(after_commit=3)
    sb, scan, plan = journal_plan(dev)
    assert len(plan.entries) >= 3 and not plan.problems
    s = Store.open(dev)
    assert not s.was_clean and keys_of(s) == committed


def test_journal_entry_bad_checksum_in_the_replay_range():
    dev, _ = unclean_image()
    sb, scan, plan = journal_plan(dev)
    victim = plan.entries[1]
    addr = jset_addr(sb, victim) + JsetHeader.SIZE + 30
    dev.write(addr, bytes([dev.read(addr, 1)[0] ^ 0x10]))
    expect_damage(dev, f"journal entries missing for seqs {victim.seq}",
                  err="journal_entries_missing", read=Store.open)
    # check's lenient open records it instead
    s = Store.open(dev, strict_journal=False)
    assert any("bad checksum" in p for p in s.journal_problems)
    assert any("missing" in p for p in s.journal_problems)


def test_damaged_commit_point_followed_by_newer_entries():
    """The newest flush entry is damaged but entries written after it are
    intact: it was durable, its commit is lost — not a crash's torn write."""
    dev, _ = unclean_image(after_commit=4)
    sb, scan, plan = journal_plan(dev)
    assert any(j.seq > plan.flush.seq for j in scan.jsets)
    addr = jset_addr(sb, plan.flush) + JsetHeader.SIZE + 12
    dev.write(addr, bytes([dev.read(addr, 1)[0] ^ 0x08]))
    expect_damage(dev, f"flush entry seq {plan.flush.seq} is damaged", "newer entries",
                  err="journal_entries_missing", read=Store.open)


def test_torn_last_journal_entry_rolls_back():
    """A crash tore the last commit point's entry: the image opens at the
    commit before, and the torn entry is reported (not an error)."""
    base = mkdev(16 << 20, node=16384, bucket=16384, block=512)
    rec = RecordingDevice(base.clone())
    s = Store.open(rec, write=True)
    models = []
    for r in range(2):
        t = s.transaction()
        for i in range(30):
            t.update(X, xkey(i, bytes([r]) * 50))
        t.commit()
        s.commit()
        models.append(keys_of(s))
    last = max(i for i, op in enumerate(rec.log) if isinstance(op, WriteOp)
               and op.offset // s.sb.bucket_size in s.sb.journal_buckets)
    data = rec.log[last].data
    nsec = -(-(JsetHeader.SIZE + JsetHeader.unpack(data).bytes) // 512)   # checksummed part
    assert nsec >= 3
    for sector in (0, nsec // 2, nsec - 1):
        dev = build_state(base, rec.log, durable=last, applied=[last],
                          torn=Torn(last, sector, "garbled", 5))
        with deadline():
            s2 = Store.open(dev)
        assert keys_of(s2) == models[0], sector
        if sector > 0:   # header intact: seen as a damaged entry (sector 0: no entry at all)
            assert any("bad checksum" in p for p in s2.journal_problems), sector
        s3 = Store.open(dev, write=True)   # recovery makes the rollback durable
        s3.close()
        assert keys_of(Store.open(dev)) == models[0]


def test_journal_last_seq_after_seq():
    dev, _ = unclean_image()
    sb, scan, plan = journal_plan(dev)
    reseal_jset(dev, sb, plan.flush, last_seq=plan.flush.seq + 5)
    expect_damage(dev, f"seq {plan.flush.seq}", "last_seq", err="journal_seq_backwards",
                  read=Store.open)


def test_journal_seqs_swapped():
    """Two entries of the replay range trade seqs (re-sealed): replay would
    apply them in the wrong order."""
    dev, _ = unclean_image()
    sb, scan, plan = journal_plan(dev)
    a, b = plan.entries[0], plan.entries[1]
    reseal_jset(dev, sb, a, seq=b.seq)
    reseal_jset(dev, sb, b, seq=a.seq)
    expect_damage(dev, "lies before", err="journal_seq_backwards", read=Store.open)


def test_journal_seq_written_twice():
    dev, _ = unclean_image()
    sb, scan, plan = journal_plan(dev)
    a, b = plan.entries[0], plan.entries[1]
    reseal_jset(dev, sb, b, seq=a.seq)
    expect_damage(dev, f"seq {a.seq} written twice", err="journal_seq_backwards",
                  read=Store.open)


def test_journal_entry_length_beyond_its_bucket():
    dev, _ = unclean_image()
    sb, scan, plan = journal_plan(dev)
    victim = plan.entries[1]
    reseal_jset(dev, sb, victim, bytes=1 << 31)
    e = expect_damage(dev, "missing", f"{victim.seq}", err="journal_entries_missing",
                      read=Store.open)
    assert "run bfs check" in str(e)
    s = Store.open(dev, strict_journal=False)
    assert any("overruns" in p for p in s.journal_problems)


def test_journal_bucket_beyond_the_device(tree_image):
    dev = tree_image.clone()
    sb = sb_of(dev)
    sb.journal_buckets = sb.journal_buckets[:-1] + [sb.nbuckets + 100]
    write_superblock(dev, sb)
    expect_damage(dev, "journal bucket list", err="sb_journal_buckets_bad", read=Store.open)


def test_superblock_claims_more_buckets_than_the_device(tree_image):
    dev = MemoryDevice(8 << 20)
    for idx, chunk in tree_image.chunks.items():
        if idx * MemoryDevice.CHUNK < 8 << 20:
            dev.chunks[idx] = bytearray(chunk)
    expect_damage(dev, "truncated", err="sb_field_bad", read=Store.open)
