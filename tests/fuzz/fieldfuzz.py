"""Field fuzzing (TESTING.md item 3; xfstests common/fuzzy, JANUS).

For every field of every fixed-size on-disk structure (superblock header,
layout record, node header, bset header, jset header, key header, each value
type), the verbs zeroes, ones, firstbit, middlebit, lastbit, +1, -1 — once raw
(the structure's checksum must catch it) and once with the checksum resealed
(the semantic checks must). Field offsets and widths come from the record
layouts derived from formats/ (bfs_tools/layouts.py).

Oracle for each case: `check -n` does not crash, exits with a documented code
(0, 4 or 8), within 10 s; a raw mutation is reported; when check reports the
image clean, every file lists and reads; and `check -y` converges (then
`check -n` exits 0, within two repair runs). Peak memory of the process stays
under 512 MiB.

    python -m tests.fuzz.fieldfuzz --list              # the cases
    python -m tests.fuzz.fieldfuzz [--only SUBSTR]     # run them, report failures
"""

from __future__ import annotations

import argparse
import re
import shutil
import struct
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bfs_tools.formats.constants import LAYOUT_OFFSET, SB_OFFSET  # noqa: E402
from bfs_tools.formats.ids import BtreeId, ChecksumType, KeyType  # noqa: E402

from bfs_tools.checksum import checksum  # noqa: E402
from bfs_tools.codec import record  # noqa: E402
from bfs_tools.errors import BfsError  # noqa: E402
from bfs_tools.keys import HEADER_SIZE  # noqa: E402
from tests.fsck import lib  # noqa: E402

VERBS = ("zeroes", "ones", "firstbit", "middlebit", "lastbit", "+1", "-1")
MEMORY_LIMIT = 512 << 20
TIMEOUT = 10.0
_ITEM = re.compile(r"(\d*)([a-zA-Z?])")


def fields_of(name: str) -> list[tuple[str, int, int]]:
    """(field, byte offset, width) of record `name`, from its struct layout."""
    rec = record(name)
    fmt = rec.STRUCT.format
    order, body = fmt[0], fmt[1:]
    out = []
    names = iter(rec._fields)
    offset = 0
    for count, code in _ITEM.findall(body):
        n = int(count) if count else 1
        if code == "x":
            offset += n
            continue
        if code == "s":
            out.append((next(names), offset, n))
            offset += n
            continue
        size = struct.calcsize(order + code)
        for _ in range(n):
            out.append((next(names), offset, size))
            offset += size
    return out


def mutate(value: bytes, verb: str) -> bytes:
    w = len(value)
    bits = 8 * w
    v = int.from_bytes(value, "little")
    mask = (1 << bits) - 1
    if verb == "zeroes":
        v = 0
    elif verb == "ones":
        v = mask
    elif verb == "firstbit":
        v ^= 1
    elif verb == "middlebit":
        v ^= 1 << (bits // 2)
    elif verb == "lastbit":
        v ^= 1 << (bits - 1)
    elif verb == "+1":
        v = (v + 1) & mask
    elif verb == "-1":
        v = (v - 1) & mask
    return v.to_bytes(w, "little")


# ---------------------------------------------------------------- sites

@dataclass
class Site:
    """Where one record lives in the fuzz image, and how to reseal it."""

    struct: str          # record name in bfs_tools/layouts.py
    what: str            # human description
    unclean: bool = False

    def locate(self, img: Path) -> list[int]:
        """Byte offsets of the record (several: the same change everywhere)."""
        raise NotImplementedError

    def reseal(self, img: Path) -> None:
        raise NotImplementedError

    @property
    def name(self) -> str:
        return f"{self.struct}@{self.what}"


class SuperblockSite(Site):
    def __init__(self):
        super().__init__("SuperblockHeader", "sb")
        self.raw_primary_only = True

    def locate(self, img):
        p = lib.store_params(img)
        return list(p["sb"].offsets)

    def locate_raw(self, img):
        return [SB_OFFSET]

    def reseal(self, img, offsets=None):
        from bfs_tools.formats.constants import SB_MAX_SIZE

        for off in offsets or self._offsets:
            head = lib.read_raw(img, off, 256)
            fields_bytes = int.from_bytes(head[248:252], "little")
            total = min(256 + min(fields_bytes, SB_MAX_SIZE), SB_MAX_SIZE)
            raw = bytearray(lib.read_raw(img, off, total))
            ctype = raw[28] if raw[28] in iter(ChecksumType) else int(ChecksumType.crc32c)
            raw[16:24] = checksum(ctype, bytes(raw[24:])).to_bytes(8, "little")
            lib.write_raw(img, off, bytes(raw[:24]))


class LayoutSite(Site):
    def __init__(self):
        super().__init__("LayoutRecord", "layout")

    def locate(self, img):
        return [LAYOUT_OFFSET]

    def reseal(self, img):
        raw = bytearray(lib.read_raw(img, LAYOUT_OFFSET, 72))
        raw[16:24] = checksum(ChecksumType.crc32c, bytes(raw[24:72])).to_bytes(8, "little")
        lib.write_raw(img, LAYOUT_OFFSET, bytes(raw))


class NodeSite(Site):
    """A record inside a btree node rewritten as one bset (same keys, same
    node_seq: the image stays valid): the node header, the bset header, a key
    header or a key's value."""

    def __init__(self, struct_name, what, btree, level, part, key_type=None, pick=0):
        super().__init__(struct_name, what)
        self.btree, self.level, self.part = btree, level, part
        self.key_type, self.pick = key_type, pick

    def _node(self, img):
        nodes = [n for n in lib.nodes(img, self.btree) if n.level == self.level]
        if self.key_type is not None:
            nodes = [n for n in nodes if any(k.type == self.key_type for k in n.keys)]
        return nodes[min(self.pick, len(nodes) - 1)]

    def locate(self, img):
        n = self._node(img)
        self._p = lib.store_params(img)
        lib.rewrite_node(img, n)
        self._n = n
        if self.part == "node":
            return [n.offset]
        if self.part == "bset":
            return [n.offset + 72]
        off = n.offset + 72 + 40
        for k in n.keys:
            if self.key_type is None or k.type == self.key_type:
                return [off if self.part == "key" else off + HEADER_SIZE]
            off += HEADER_SIZE + len(k.val)
        raise RuntimeError(f"{self.name}: no key")

    def reseal(self, img):
        p = self._p
        ct = p["csum_type"]
        n = self._n
        size = p["node_size"]
        buf = bytearray(lib.read_raw(img, n.offset, size))
        buf[0:8] = checksum(ct, bytes(buf[8:72])).to_bytes(8, "little")
        nbytes = int.from_bytes(buf[72 + 32:72 + 36], "little")
        end = min(72 + 40 + nbytes, size)
        buf[72:80] = checksum(ct, bytes(buf[80:end])).to_bytes(8, "little")
        lib.write_raw(img, n.offset, bytes(buf))


class JsetSite(Site):
    def __init__(self, flush: bool):
        super().__init__("JsetHeader", "flush-jset" if flush else "jset", unclean=True)
        self.flush = flush

    def locate(self, img):
        from tests.fsck.make_corpus import journal_info, jset_offset

        info = journal_info(img)
        js = [j for j in info["replay"] if j.is_flush == self.flush]
        self._off = jset_offset(info, js[-1] if self.flush else js[0])
        self._ct = info["sb"].csum_type
        self._bucket_end = (self._off // info["sb"].bucket_size + 1) * info["sb"].bucket_size
        return [self._off]

    def reseal(self, img):
        head = lib.read_raw(img, self._off, 40)
        nbytes = int.from_bytes(head[36:40], "little")
        end = min(self._off + 40 + nbytes, self._bucket_end)
        raw = bytearray(lib.read_raw(img, self._off, end - self._off))
        raw[0:8] = checksum(self._ct, bytes(raw[8:])).to_bytes(8, "little")
        lib.write_raw(img, self._off, bytes(raw[:8]))


E, INO, D, X = BtreeId.extents, BtreeId.inodes, BtreeId.dirents, BtreeId.xattrs
K = KeyType
SITES: list[Site] = [
    SuperblockSite(),
    LayoutSite(),
    NodeSite("NodeHeader", "inodes-leaf", INO, 0, "node", pick=1),
    NodeSite("NodeHeader", "inodes-root", INO, 1, "node"),
    NodeSite("BsetHeader", "inodes-leaf", INO, 0, "bset", pick=1),
    JsetSite(flush=True),
    JsetSite(flush=False),
    NodeSite("KeyHeader", "inode", INO, 0, "key", K.inode, pick=1),
    NodeSite("KeyHeader", "dirent", D, 0, "key", K.dirent),
    NodeSite("KeyHeader", "extent", E, 0, "key", K.extent),
    NodeSite("InodeValue", "inode", INO, 0, "value", K.inode, pick=1),
    NodeSite("DirentValue", "dirent", D, 0, "value", K.dirent),
    NodeSite("XattrValue", "xattr", X, 0, "value", K.xattr),
    NodeSite("ExtentValue", "extent", E, 0, "value", K.extent),
    NodeSite("ReflinkPValue", "reflink_p", E, 0, "value", K.reflink_p),
    NodeSite("ReflinkVValue", "reflink_v", BtreeId.reflink, 0, "value", K.reflink_v),
    NodeSite("SnapshotValue", "snapshot", BtreeId.snapshots, 0, "value", K.snapshot),
    NodeSite("SnapshotTreeValue", "snapshot_tree", BtreeId.snapshot_trees, 0, "value",
             K.snapshot_tree),
    NodeSite("SubvolumeValue", "subvolume", BtreeId.subvolumes, 0, "value", K.subvolume),
    NodeSite("AllocValue", "alloc", BtreeId.alloc, 0, "value", K.alloc),
    NodeSite("BtreePtrValue", "inodes-root", INO, 1, "value", K.btree_ptr),
]


@dataclass(frozen=True)
class Case:
    site: int
    field: str
    offset: int
    width: int
    verb: str
    resealed: bool

    @property
    def name(self) -> str:
        s = SITES[self.site]
        return f"{s.name}.{self.field}.{self.verb}.{'sealed' if self.resealed else 'raw'}"


def cases() -> list[Case]:
    out = []
    for i, s in enumerate(SITES):
        # reserved fields (pad) are fuzzed too: they must be ignored or caught
        for fname, off, width in fields_of(s.struct):
            for verb in VERBS:
                for sealed in (False, True):
                    out.append(Case(i, fname, off, width, verb, sealed))
    return out


# ---------------------------------------------------------------- running a case

class Bases:
    """The base images (clean and unclean), built once per process."""

    def __init__(self, workdir: Path):
        self.dir = workdir
        self._clean = self._unclean = None

    def get(self, unclean: bool) -> tuple[Path, lib.Manifest]:
        if not unclean:
            if self._clean is None:
                img = self.dir / "base-clean.img"
                with lib.deterministic(7):
                    m = lib.build_base(img, seed=7)
                self._clean = (img, m)
            return self._clean
        if self._unclean is None:
            from tests.fsck.make_corpus import make_unclean

            img = self.dir / "base-unclean.img"
            with lib.deterministic(8):
                m = lib.build_base(img, seed=7)
                make_unclean(img)
            self._unclean = (img, m)
        return self._unclean


_prepared: dict[tuple[int, str], tuple[Path, list[int]]] = {}


def prepare(site_index: int, bases: Bases) -> tuple[Path, list[int]]:
    """The site's image (the base with the record located; once per process)."""
    site = SITES[site_index]
    base, _m = bases.get(site.unclean)
    key = (site_index, str(base))
    got = _prepared.get(key)
    if got is None:
        img = base.with_name(f"site{site_index}.img")
        shutil.copyfile(base, img)
        got = _prepared[key] = (img, site.locate(img))
    return got


def run_case(case: Case, bases: Bases, work: Path) -> list[str]:
    """Apply one mutation to a copy of the site's image and judge check. Returns
    the problems found (empty: the case passed, or the mutation was a no-op)."""
    site = SITES[case.site]
    site_img, offsets = prepare(case.site, bases)
    img = work / "case.img"
    shutil.copyfile(site_img, img)
    if not case.resealed and isinstance(site, SuperblockSite):
        offsets = site.locate_raw(img)
    changed = False
    for off in offsets:
        old = lib.read_raw(img, off + case.offset, case.width)
        new = mutate(old, case.verb)
        if new != old:
            lib.write_raw(img, off + case.offset, new)
            changed = True
    if not changed:
        return []
    if case.resealed:
        if isinstance(site, SuperblockSite):
            site.reseal(img, offsets)
        else:
            site.reseal(img)
    # a journal entry whose magic is gone is no entry at all: the newest flush
    # entry vanishing looks like a crash just before that commit (consistent)
    exempt = site.struct == "JsetHeader" and case.field == "magic"
    return judge(img, expect_detect=not case.resealed and not exempt)


def judge(img: Path, *, expect_detect: bool = False, args=()) -> list[str]:
    try:
        with lib.memory_limit(MEMORY_LIMIT):
            return _judge(img, expect_detect, args)
    except lib.Timeout as e:
        return [f"hang: {e}"]


def _judge(img: Path, expect_detect: bool, args) -> list[str]:
    problems = []
    # --verify-data: a clean verdict must mean the files read (a resealed extent
    # pointing at the wrong data is only visible by reading it)
    args = ("--verify-data", *args)
    r = lib.run_cli("check", "-n", *args, img, timeout=TIMEOUT)
    if r.crashed or r.rc not in (0, 4, 8):
        return [f"check -n: {r}"]
    if expect_detect and r.rc == 0 and "clean" in r.out.splitlines()[-1:][0]:
        problems.append(f"raw mutation not caught: {r}")
    if r.rc == 0 and r.out.rstrip().endswith("s)") and ": clean (" in r.out:
        try:
            _tree, read_problems = lib.read_tree(img)
        except BfsError as e:
            read_problems = [f"cannot open: {e}"]
        if read_problems:
            problems.append(f"check says clean but files do not read: {read_problems[:5]}")
    if r.rc == 8:
        return problems   # cannot be opened: one clear error is the documented outcome
    for _attempt in range(2):
        y = lib.run_cli("check", "-y", *args, img, timeout=TIMEOUT)
        if y.crashed or y.rc not in (0, 1, 4, 8):
            return problems + [f"check -y: {y}"]
        n = lib.run_cli("check", "-n", *args, img, timeout=TIMEOUT)
        if n.crashed:
            return problems + [f"check -n after -y: {n}"]
        if n.rc == 0:
            break
    else:
        if not _only_unrepairable(n):
            problems.append(f"check -y does not converge in two runs: {y}\nthen: {n}")
    return problems


def _only_unrepairable(r) -> bool:
    """Exit 4 with nothing but findings marked [cannot fix]: the documented answer."""
    lines = [x for x in r.out.splitlines() if x.endswith("]")]
    return bool(lines) and all(x.endswith("[cannot fix]") for x in lines)


def save_case(case: Case, bases: Bases, work: Path, why: str) -> Path:
    """Keep the image of a field case (as mutated, before any check) as a crasher."""
    from tests.fuzz.randfuzz import save

    site = SITES[case.site]
    site_img, offsets = prepare(case.site, bases)
    img = work / "save.img"
    shutil.copyfile(site_img, img)
    if not case.resealed and isinstance(site, SuperblockSite):
        offsets = site.locate_raw(img)
    for off in offsets:
        old = lib.read_raw(img, off + case.offset, case.width)
        lib.write_raw(img, off + case.offset, mutate(old, case.verb))
    if case.resealed:
        site.reseal(img, offsets) if isinstance(site, SuperblockSite) else site.reseal(img)
    cmds = [["check", "-n", "--verify-data", "IMG"], ["dump", "super", "IMG"],
            ["dump", "journal", "IMG"], ["dump", "btree", "IMG", "inodes"],
            ["ls", "IMG", "/", "-R", "-l"], ["get", "IMG", "/", "OUT/get", "-r"]]
    name = re.sub(r"[^A-Za-z0-9.+-]", "-", case.name).replace("+", "plus")
    how = (f"Found by the field fuzzer: `python -m tests.fuzz.fieldfuzz --only {case.name}` "
           f"({case.verb} on field {case.field} of {site.struct} at {site.what}, "
           f"{'checksum resealed' if case.resealed else 'raw'}).")
    return save(img, f"field-{name}", {"field_case": case.name, "commands": cmds}, how, why)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--only", default="", help="cases whose name contains this")
    ap.add_argument("--exclude", default=None, help="but not this")
    ap.add_argument("--stop", action="store_true", help="stop at the first failure")
    ap.add_argument("--save", default=None, metavar="WHY",
                    help="keep each selected case's image under fixtures/fuzz (a crasher: "
                         "WHY says what it did)")
    a = ap.parse_args(argv)
    todo = [c for c in cases() if a.only in c.name
            and (a.exclude is None or a.exclude not in c.name)]
    if a.list:
        for c in todo:
            print(c.name)
        print(f"{len(todo)} cases", file=sys.stderr)
        return 0
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        bases = Bases(Path(tmp))
        for i, c in enumerate(todo):
            if a.save is not None:
                print(f"kept {save_case(c, bases, Path(tmp), a.save)}")
            probs = run_case(c, bases, Path(tmp))
            if probs:
                failed += 1
                print(f"FAIL {c.name}")
                for p in probs:
                    print("    " + p.replace("\n", "\n    ")[:3000])
                if a.stop:
                    break
            if i % 100 == 0:
                print(f"{i}/{len(todo)} cases, {failed} failed", file=sys.stderr)
    print(f"{len(todo)} cases, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
