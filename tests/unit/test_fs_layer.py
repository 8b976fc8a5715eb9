"""The filesystem layer through its Python API: write/truncate at every alignment
against a bytearray model, hashed names under forced collisions (linear probing,
hash whiteouts), and the DataWriter's space guard."""

from __future__ import annotations

import random
import stat

import pytest

from bfs_tools.errors import NoSpaceError
from bfs_tools.fs import filesystem as fsmod
from bfs_tools.fs.filesystem import Filesystem
from tests.fs_checks import verify_image

BLOCK = 4096


@pytest.fixture
def fs_img(formatted):
    return formatted("64M")


def test_write_and_truncate_match_a_model(fs_img):
    rnd = random.Random(5)
    model = bytearray()
    with Filesystem.open(str(fs_img), write=True) as fs:
        w = fs.create(fs.root(), b"f", stat.S_IFREG | 0o644)
        ops = [("write", 0, 1), ("write", 4095, 2), ("write", 2000, 100), ("truncate", 10),
               ("write", 100_000, 5000), ("truncate", 4097), ("write", 3 * BLOCK - 1, BLOCK + 2),
               ("truncate", 200_000), ("write", 150_000, 70_000), ("truncate", 2048),
               ("write", 1 << 20, 7), ("truncate", 0), ("write", 5, 3000)]
        ops += [("write", rnd.randrange(0, 300_000), rnd.randrange(1, 70_000)) if rnd.random() < .7
                else ("truncate", rnd.randrange(0, 300_000)) for _ in range(40)]
        for op in ops:
            if op[0] == "write":
                _, off, n = op
                data = rnd.randbytes(n)
                if len(model) < off:
                    model.extend(bytes(off - len(model)))
                model[off:off + n] = data
                fs.write(w, off, data, "/f")
            else:
                _, size = op
                if size < len(model):
                    del model[size:]
                else:
                    model.extend(bytes(size - len(model)))
                fs.truncate(w, size, "/f")
            ino = fs.inode(w)
            assert ino.size == len(model), op
            assert b"".join(fs.iter_read(w, ino, "/f")) == bytes(model), op
            assert fs.read(w, ino, 0, len(model) + 10, "/f") == bytes(model), op
    assert not verify_image(fs_img)


def test_iter_read_streams_holes_in_chunks(fs_img):
    with Filesystem.open(str(fs_img), write=True) as fs:
        w = fs.create(fs.root(), b"f", stat.S_IFREG | 0o644)
        fs.write(w, 10 << 20, b"end", "/f")
        ino = fs.inode(w)
        chunks = list(fs.iter_read(w, ino, "/f"))
        assert max(len(c) for c in chunks) <= 4 << 20
        data = b"".join(chunks)
        assert len(data) == (10 << 20) + 3 and data.endswith(b"end") and not any(data[:10 << 20])


def test_names_under_forced_hash_collisions(tmp_path, monkeypatch):
    """Every name hashes to one slot: probing, hash whiteouts and reuse of
    whiteout slots must keep every name reachable. (The image's slots do not
    match the real hash, so it is not given to check.)"""
    from bfs_tools.format import format_device, open_target, plan_geometry

    img = tmp_path / "collide.img"
    dev = open_target(str(img), 64 << 20, True)
    format_device(dev, plan_geometry(dev.size))
    dev.close()
    monkeypatch.setattr(fsmod, "name_hash", lambda name, seed: 1000)
    names = [f"n{i}".encode() for i in range(60)]
    with Filesystem.open(str(img), write=True) as fs:
        root = fs.root()
        for n in names:
            fs.create(root, n, stat.S_IFREG | 0o644, data=n)
        for n in names[10:50:3]:
            fs.unlink(root, n)
        alive = [n for n in names if n not in names[10:50:3]]
        for n in alive:
            e = fs.lookup(root, fs.inode(root), n)
            assert e is not None and fs.read_all(e.where, fs.inode(e.where), "") == n
        for n in names[10:50:3]:
            assert fs.lookup(root, fs.inode(root), n) is None
        assert sorted(e.name for e in fs.readdir(root)) == sorted(alive)
        # re-creating reuses whiteout slots; renames move through the chain
        for n in names[10:50:3]:
            fs.create(root, n + b"-again", stat.S_IFREG | 0o644)
        fs.rename(root, names[0], root, b"renamed")
        fs.rename(root, names[-1], root, names[1])       # over an existing name
        expect = set(alive) - {names[0], names[-1]} | {b"renamed"} | {
            n + b"-again" for n in names[10:50:3]}
        assert {e.name for e in fs.readdir(root)} == expect
        for n in expect:
            assert fs.lookup(root, fs.inode(root), n) is not None
        assert fs.read_all(*(lambda e: (e.where, fs.inode(e.where)))(
            fs.lookup(root, fs.inode(root), names[1])), "") == names[-1]
        # empty the directory: the whole probe chain goes
        for e in list(fs.readdir(root)):
            fs.unlink(root, e.name)
        assert fs.readdir(root) == [] and fs.is_empty_dir(root)
    with Filesystem.open(str(img)) as fs:
        assert fs.readdir(fs.root()) == []


def test_xattrs_set_replace_remove(fs_img):
    with Filesystem.open(str(fs_img), write=True) as fs:
        w = fs.create(fs.root(), b"f", stat.S_IFREG | 0o644)
        for i in range(50):
            fs.setxattr(w, f"user.k{i}".encode(), bytes([i]) * i)
        fs.setxattr(w, b"user.k7", b"replaced")
        fs.removexattr(w, b"user.k8")
        assert fs.getxattr(w, b"user.k7") == b"replaced"
        assert fs.getxattr(w, b"user.k8") is None
        assert len(fs.listxattr(w)) == 49
        with pytest.raises(ValueError):
            fs.setxattr(w, b"nonamespace", b"v")
        with pytest.raises(ValueError):
            fs.setxattr(w, b"user.big", bytes(70_000))
        fs.unlink(fs.root(), b"f")               # the xattrs go with the inode
    assert not verify_image(fs_img)


def test_data_writer_refuses_to_reuse_space_in_one_transaction(formatted):
    """The guard over the allocator's committed-only view (see DataWriter)."""
    img = formatted("16M")
    with Filesystem.open(str(img), write=True) as fs:
        with pytest.raises(NoSpaceError):
            fs.create(fs.root(), b"big", stat.S_IFREG | 0o644, data=bytes(20 << 20))
        fs.abort()
    assert not verify_image(img)
    with Filesystem.open(str(img), write=True) as fs:
        fs.create(fs.root(), b"fits", stat.S_IFREG | 0o644, data=b"x" * (5 << 20))
    assert not verify_image(img)


@pytest.mark.parametrize("seed", range(1, 9))
def test_random_namespace_workload_matches_a_model(formatted, seed):
    """create/mkdir/link/symlink/rename/unlink/write at random through the API,
    against a model; the image must match it and stay consistent (and `bfs check
    -n` runs on it after the test)."""
    img = formatted("64M")
    rnd = random.Random(seed)
    files: dict[int, bytes] = {}                 # model inode -> contents
    tree: dict[str, tuple[str, int | None]] = {"/": ("dir", None)}   # path -> (kind, inode)
    next_id = iter(range(1, 1 << 30))

    def dirs() -> list[str]:
        return [p for p, (k, _) in tree.items() if k == "dir"]

    def child(d: str) -> str:
        return d.rstrip("/") + "/" + rnd.choice("abcdefgh") + str(rnd.randrange(6))

    def under(p: str, d: str) -> bool:
        return p == d or p.startswith(d.rstrip("/") + "/")

    with Filesystem.open(str(img), write=True) as fs:
        def parent_of(p: str):
            r = fs.resolve(p.rsplit("/", 1)[0] or "/")
            return r.where, p.rsplit("/", 1)[1].encode()

        for _ in range(600):
            op = rnd.choice(["file", "file", "mkdir", "link", "symlink", "rename", "unlink",
                             "write"])
            if op in ("file", "mkdir", "symlink"):
                p = child(rnd.choice(dirs()))
                if p in tree:
                    continue
                w, name = parent_of(p)
                if op == "file":
                    data = rnd.randbytes(rnd.choice([0, 10, 3000, 5000, 70_000]))
                    fs.create(w, name, stat.S_IFREG | 0o644, data=data)
                    i = next(next_id)
                    files[i] = data
                    tree[p] = ("file", i)
                elif op == "mkdir":
                    fs.create(w, name, stat.S_IFDIR | 0o755)
                    tree[p] = ("dir", None)
                else:
                    fs.create(w, name, stat.S_IFLNK | 0o777, symlink=b"target")
                    tree[p] = ("symlink", None)
            elif op == "link":
                srcs = [p for p, (k, _) in tree.items() if k == "file"]
                p = child(rnd.choice(dirs()))
                if not srcs or p in tree:
                    continue
                s = rnd.choice(srcs)
                w, name = parent_of(p)
                fs.link(fs.resolve(s).where, w, name)
                tree[p] = tree[s]
            elif op == "rename":
                cands = [p for p in tree if p != "/"]
                if not cands:
                    continue
                s = rnd.choice(cands)
                d = child(rnd.choice(dirs()))
                kind = tree[s][0]
                if under(d, s) or d in tree and (tree[d][0] == "dir") != (kind == "dir") or \
                        d in tree and kind == "dir" and any(under(q, d) and q != d for q in tree):
                    continue
                sw, sn = parent_of(s)
                dw, dn = parent_of(d)
                fs.rename(sw, sn, dw, dn)
                if s == d or kind == "file" and tree.get(d) == tree[s]:
                    continue            # the same file: rename(2) does nothing
                moved = {q: v for q, v in tree.items() if under(q, s)}
                for q in moved:
                    del tree[q]
                if d in tree:
                    del tree[d]
                for q, v in moved.items():
                    tree[d + q[len(s):]] = v
            elif op == "unlink":
                cands = [p for p in tree if p != "/" and not (
                    tree[p][0] == "dir" and any(under(q, p) and q != p for q in tree))]
                if not cands:
                    continue
                p = rnd.choice(cands)
                w, name = parent_of(p)
                fs.unlink(w, name, allow_dir=True)
                del tree[p]
            else:
                srcs = [p for p, (k, _) in tree.items() if k == "file"]
                if not srcs:
                    continue
                p = rnd.choice(srcs)
                i = tree[p][1]
                off = rnd.randrange(0, len(files[i]) + 5000)
                data = rnd.randbytes(rnd.randrange(1, 9000))
                fs.write(fs.resolve(p).where, off, data, p)
                cur = bytearray(files[i])
                cur.extend(bytes(max(0, off - len(cur))))
                cur[off:off + len(data)] = data
                files[i] = bytes(cur)
        # compare the whole namespace with the model
        seen = {}
        todo = ["/"]
        while todo:
            d = todo.pop()
            for e in fs.readdir(fs.resolve(d).where):
                p = d.rstrip("/") + "/" + e.name.decode()
                ino = fs.inode(e.where)
                kind = "dir" if ino.is_dir else "symlink" if ino.is_lnk else "file"
                seen[p] = kind
                if kind == "dir":
                    todo.append(p)
                elif kind == "file":
                    i = tree[p][1]
                    assert b"".join(fs.iter_read(e.where, ino, p)) == files[i], p
                    assert ino.nlink == sum(1 for v in tree.values() if v == ("file", i)), p
        assert seen == {p: k for p, (k, _) in tree.items() if p != "/"}
        assert len(seen) > 40 and sum(1 for k in seen.values() if k == "dir") > 5
    problems = verify_image(img)
    assert not problems, problems[:10]
