"""Build the malicious images of fixtures/malicious/ (TESTING.md item 6).

Each image is a valid bfs image (checksums, btrees and allocation all sound) whose
*namespace* is hostile: it is crafted through the Python API, writing dirent,
inode, extent and xattr keys directly where the filesystem layer would refuse
them (names `..` or with `/`, duplicate names, directory cycles, absurd sizes).
Nothing here is checked in as a binary: the images are regenerated from this
script, by the tests (into a temporary directory) or by hand:

    .venv/bin/python tests/security/make_malicious.py [OUT_DIR]   # default fixtures/malicious

Every case documents what `bfs get -r` must do with it in EXPECT.
"""

from __future__ import annotations

import stat
import sys
from pathlib import Path

from bfs_tools.formats.ids import BtreeId, DirentType, KeyType, XattrType

from bfs_tools.format import format_device, open_target, plan_geometry
from bfs_tools.fs.dirent import Dirent, dirent_key
from bfs_tools.fs.filesystem import Filesystem, Where
from bfs_tools.fs.inode import Inode
from bfs_tools.fs.strhash import name_hash
from bfs_tools.fs.xattr import Xattr, xattr_key
from bfs_tools.keys import Key

D, INODES, E, X = BtreeId.dirents, BtreeId.inodes, BtreeId.extents, BtreeId.xattrs
SIZE = 64 << 20
PAYLOAD = b"PWNED: written by a malicious image\n"
# an absolute symlink target outside any destination: must never be created
VICTIM = "/tmp/bfs-malicious-victim"

CASES: dict[str, callable] = {}
EXPECT: dict[str, str] = {}


def case(expect: str):
    def deco(fn):
        CASES[fn.__name__] = fn
        EXPECT[fn.__name__] = expect
        return fn
    return deco


# ---------------------------------------------------------------------- crafting


class Crafter:
    """Raw keys into one transaction of an open filesystem."""

    def __init__(self, fs: Filesystem):
        self.fs = fs
        self.t = fs.store.transaction()
        self.root = fs.root()

    def file(self, parent: Where, name: bytes, data: bytes = PAYLOAD, mode: int = 0o644) -> Where:
        """A normal file, made by the filesystem layer."""
        return self.fs.create(parent, name, stat.S_IFREG | mode, data=data, trans=self.t)

    def dir(self, parent: Where, name: bytes, mode: int = 0o755) -> Where:
        return self.fs.create(parent, name, stat.S_IFDIR | mode, trans=self.t)

    def symlink(self, parent: Where, name: bytes, target: bytes) -> Where:
        return self.fs.create(parent, name, stat.S_IFLNK | 0o777, symlink=target, trans=self.t)

    def orphan(self, mode: int, *, size: int = 0, nlink: int = 1) -> Where:
        """An inode no dirent names yet (raw dirents will)."""
        ino = self.fs.new_inode(self.t, self.root, mode)
        ino.size, ino.nlink = size, nlink
        w = Where(self.root.subvol, self.root.snapshot, ino.inum)
        self.fs.put_inode(self.t, w, ino)
        return w

    def inode(self, w: Where) -> Inode:
        return self.fs.inode(w, self.t)

    def set_inode(self, w: Where, **fields) -> None:
        ino = self.inode(w)
        for k, v in fields.items():
            setattr(ino, k, v)
        self.fs.put_inode(self.t, w, ino)

    def dirent(self, parent: Where, name: bytes, target: Where, d_type: int,
               slot: int | None = None) -> int:
        """A raw dirent (any name, any slot: default the hash slot, probing past
        whatever is already there, so duplicates of a name sort after it)."""
        if slot is None:
            slot = name_hash(name, self.inode(parent).hash_seed)
        while any(True for _ in self.t.iter(D, (parent.inum, slot, 0),
                                            (parent.inum, slot, 0xFFFFFFFF))):
            slot += 1
        self.t.update(D, dirent_key((parent.inum, slot, parent.snapshot),
                                    Dirent(target.inum, d_type, name)))
        return slot

    def inline(self, w: Where, end_sector: int, size: int, data: bytes) -> None:
        self.t.update(E, Key((w.inum, end_sector, w.snapshot), KeyType.inline_data, data,
                             size=size))

    def xattr(self, w: Where, x_type: int, name: bytes, value: bytes) -> None:
        slot = name_hash(bytes([x_type]) + name, self.inode(w).hash_seed)
        self.t.update(X, xattr_key((w.inum, slot, w.snapshot), Xattr(x_type, name, value)))

    def commit(self) -> None:
        self.t.commit()


# ---------------------------------------------------------------------- cases


@case("every unsafe name is skipped with a warning; `ok` and the non-UTF-8 name are "
      "extracted; nothing appears outside the destination")
def bad_names(c: Crafter) -> None:
    r = c.root
    c.file(r, b"ok", b"fine\n")
    c.file(r, b"latin1-\xe9\xff", b"a legal non-UTF-8 name\n")
    victim = c.orphan(stat.S_IFREG | 0o644, size=len(PAYLOAD))
    c.inline(victim, 1, 1, PAYLOAD)
    for name in (b"..", b".", b"", b"a/b", b"../../escaped", b"/tmp/bfs-malicious-abs",
                 b"a\0b", b"x" * 300, b"../" * 90):
        c.dirent(r, name, victim, DirentType.reg)
    # a directory named ".." holding a file: followed, it would write dest/../escaped
    up = c.dir(r, b"updir")
    c.file(up, b"escaped")
    c.dirent(r, b"..", up, DirentType.dir)
    c.dirent(r, b"sub/..", up, DirentType.dir)
    # xattr names the host cannot take
    x = c.file(r, b"xattr-nul", b"xattrs\n")
    c.xattr(x, XattrType.user, b"a\0b", b"v")
    c.xattr(x, XattrType.user, b"fine", b"v")


@case("the symlinks are created (dangling, pointing outside) and never followed: the files "
      "and directories of the same names are skipped")
def symlink_then_file(c: Crafter) -> None:
    r = c.root
    for name, target in ((b"evil-rel", b"../victim"), (b"evil-abs", VICTIM.encode()),
                         (b"evil-dot", b"."), (b"evil-up", b"..")):
        c.symlink(r, name, target)
        f = c.orphan(stat.S_IFREG | 0o644, size=len(PAYLOAD))
        c.inline(f, 1, 1, PAYLOAD)
        c.dirent(r, name, f, DirentType.reg)
    # a symlink to the parent, then a directory of that name holding a payload
    c.symlink(r, b"evildir", b"..")
    d = c.orphan(stat.S_IFDIR | 0o755, nlink=2)
    c.set_inode(d, hash_seed=12345)
    pay = c.orphan(stat.S_IFREG | 0o644, size=len(PAYLOAD))
    c.inline(pay, 1, 1, PAYLOAD)
    c.dirent(d, b"payload", pay, DirentType.reg)
    c.dirent(r, b"evildir", d, DirentType.dir)
    # the other order: a real directory, then a symlink of the same name
    sub = c.dir(r, b"realdir")
    c.file(sub, b"inside", b"inside\n")
    link = c.orphan(stat.S_IFLNK | 0o777, size=2)
    c.inline(link, 1, 1, b"..")
    c.dirent(r, b"realdir", link, DirentType.lnk)


@case("each directory is entered once: the loops are skipped with a warning")
def dir_cycle(c: Crafter) -> None:
    r = c.root
    a = c.dir(r, b"a")
    b = c.dir(a, b"b")
    c.file(b, b"file", b"in b\n")
    c.dirent(b, b"loop-to-a", a, DirentType.dir)
    c.dirent(b, b"loop-to-self", b, DirentType.dir)
    c.dirent(r, b"loop-to-root", r, DirentType.dir)


@case("sizes beyond the host are refused per file (warning), holes are never written: "
      "bounded time, memory and disk")
def huge_sparse(c: Crafter) -> None:
    r = c.root
    w = c.file(r, b"huge-2^62", b"")
    c.inline(w, 8, 8, b"start of a 2^62-byte file\n")
    c.inline(w, (1 << 31) + 8, 8, b"one TiB in\n")
    c.set_inode(w, size=1 << 62)
    w = c.file(r, b"huge-u64max", b"")
    c.inline(w, 8, 8, b"x")
    c.set_inode(w, size=(1 << 64) - 1)
    # a sparse file the host can hold (1 TiB, two blocks of data)
    w = c.file(r, b"sparse-1T", b"")
    c.inline(w, 8, 8, b"head\n")
    c.inline(w, (1 << 31) - 8, 8, b"tail\n")
    c.set_inode(w, size=1 << 40)
    # an inline key claiming 2^32-1 sectors (2 TiB) for 5 bytes
    w = c.file(r, b"inline-claims-2TiB", b"")
    c.inline(w, (1 << 32) - 1, (1 << 32) - 1, b"hello")
    c.set_inode(w, size=((1 << 32) - 1) * 512)
    # a symlink whose inode claims a 1 TiB target
    s = c.symlink(r, b"huge-symlink", b"target")
    c.set_inode(s, size=1 << 40)
    # a symlink target holding NUL, and an empty one
    s = c.symlink(r, b"nul-symlink", b"a\0b")
    s = c.orphan(stat.S_IFLNK | 0o777, size=0)
    c.dirent(r, b"empty-symlink", s, DirentType.lnk)
    # counts claiming 2^32
    c.file(r, b"nlink-max", b"many links\n")
    w = c.fs.lookup(r, c.inode(r), b"nlink-max", c.t).where
    c.set_inode(w, nlink=0xFFFFFFFF)
    c.file(r, b"after", b"still extracted\n")


DEEP = 2000


@case(f"a {DEEP}-level tree is extracted completely (no recursion limit, fds bounded)")
def deep_tree(c: Crafter) -> None:
    d = c.root
    for i in range(DEEP):
        d = c.dir(d, b"d")
        if i % 500 == 499:
            c.commit()
            c.t = c.fs.store.transaction()
    c.file(d, b"bottom", b"at the bottom\n")


# ---------------------------------------------------------------------- building


def build(name: str, path: Path) -> Path:
    """Format `path` and craft case `name` into it."""
    path = Path(path)
    if path.exists():
        path.unlink()
    dev = open_target(str(path), SIZE, True)

    def populate(store) -> None:
        c = Crafter(Filesystem(store))
        CASES[name](c)
        c.commit()

    try:
        format_device(dev, plan_geometry(dev.size), populate=populate)
    finally:
        dev.close()
    return path


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else Path(__file__).resolve().parents[2] / "fixtures" / "malicious"
    out.mkdir(parents=True, exist_ok=True)
    for name in CASES:
        p = build(name, out / f"{name}.img")
        print(f"{p}: {EXPECT[name]}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    raise SystemExit(main(sys.argv[1:]))
