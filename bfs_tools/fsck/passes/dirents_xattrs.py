"""Passes dirents and xattrs: each entry in a directory/inode its snapshot sees,
at the slot its name hashes to (reachable by probing), pointing at what exists.

Repairs go through the hashed-btree operations, so probe chains stay intact:
a misplaced entry is removed (as a hash whiteout where needed) and inserted
again at its right slot.
"""

from __future__ import annotations

import stat

from ...errors import BfsError
from ...formats.ids import BtreeId, DirentType, KeyType
from ...fs import hashed
from ...fs.dirent import Dirent, decode_dirent, dirent_key
from ...fs.filesystem import dtype_of
from ...fs.strhash import name_hash
from ...fs.xattr import decode_xattr, xattr_key
from ..util import Batch, inode_seen_from, inode_versions, loc, visible_set

D, X, SV = BtreeId.dirents, BtreeId.xattrs, BtreeId.subvolumes


def run_dirents(ctx) -> None:
    bt = ctx.store.btrees
    versions = inode_versions(ctx)
    subvols = {k.pos[1] for k in bt.iter(SV)}
    batch = Batch(ctx)
    for k in list(bt.iter(D)):
        if k.type != KeyType.dirent:
            continue
        try:
            d = decode_dirent(k.val)
        except BfsError:
            continue
        dir_inum, slot, snap = k.pos
        visible = visible_set(ctx, snap)
        where = loc(D, k.pos)
        name = d.name.decode("utf-8", "backslashreplace")
        dir_ino = inode_seen_from(versions.get(dir_inum), visible)
        if dir_ino is None or not dir_ino.is_dir:
            if ctx.report("dirent_in_non_dir", where,
                          f"{name!r}: inode {dir_inum} is not a directory in snapshot {snap}"):
                t = batch.t()
                hashed.delete(t, D, k, snap, visible)
            continue
        # is it where a lookup finds it?
        h = name_hash(d.name, dir_ino.hash_seed)
        found = hashed.lookup(bt, D, dir_inum, h, visible,
                              lambda x, n=d.name: x.type == KeyType.dirent
                              and decode_dirent(x.val).name == n)
        if found is None or found.pos[1] != slot:
            if found is not None:
                if ctx.report("dirent_duplicate", where,
                              f"{name!r} also at slot {found.pos[1]} in directory {dir_inum}"):
                    hashed.delete(batch.t(), D, k, snap, visible)
                continue
            if ctx.report("dirent_bad_hash", where,
                          f"{name!r} is at slot {slot}, not reachable from its hash {h}"):
                t = batch.t()
                hashed.delete(t, D, k, snap, visible)
                new = hashed.find_slot(t, D, dir_inum, h, visible)
                t.update(D, dirent_key((dir_inum, new, snap), d))
                slot = new
        if d.is_subvol:
            if d.child_subvol not in subvols:
                if ctx.report("dirent_to_subvol_bad", where,
                              f"{name!r} names subvolume {d.child_subvol}, which does not exist"):
                    hashed.delete(batch.t(), D, Key_at(k, slot), snap, visible)
            continue
        target = inode_seen_from(versions.get(d.target), visible)
        if target is None:
            if ctx.report("dirent_target_missing", where,
                          f"{name!r} names inode {d.target}, which does not exist in snapshot "
                          f"{snap}"):
                hashed.delete(batch.t(), D, Key_at(k, slot), snap, visible)
            continue
        want = dtype_of(target.mode)
        if want != d.d_type and want != DirentType.unknown:
            if ctx.report("dirent_type_wrong", where,
                          f"{name!r} has type {d.d_type}, inode {d.target} is "
                          f"{stat.filemode(target.mode)[0]!r}"):
                batch.t().update(D, dirent_key((dir_inum, slot, snap),
                                               Dirent(d.target, want, d.name)))
    batch.flush()


def Key_at(k, slot):
    """k moved to `slot` (after a rehash in the same transaction)."""
    from ...keys import Key

    return k if k.pos[1] == slot else Key((k.pos[0], slot, k.pos[2]), k.type, k.val)


def run_xattrs(ctx) -> None:
    bt = ctx.store.btrees
    versions = inode_versions(ctx)
    batch = Batch(ctx)
    for k in list(bt.iter(X)):
        if k.type != KeyType.xattr:
            continue
        try:
            x = decode_xattr(k.val)
        except BfsError:
            continue
        inum, slot, snap = k.pos
        visible = visible_set(ctx, snap)
        where = loc(X, k.pos)
        owner = inode_seen_from(versions.get(inum), visible)
        if owner is None:
            if ctx.report("xattr_no_inode", where,
                          f"inode {inum} does not exist in snapshot {snap}"):
                hashed.delete(batch.t(), X, k, snap, visible)
            continue
        h = name_hash(bytes([x.x_type]) + x.name, owner.hash_seed)
        found = hashed.lookup(bt, X, inum, h, visible,
                              lambda y, x=x: y.type == KeyType.xattr
                              and decode_xattr(y.val)[:2] == x[:2])
        if found is None or found.pos[1] != slot:
            if ctx.report("xattr_bad_hash", where,
                          f"{x.full_name!r} not reachable from its hash"):
                t = batch.t()
                hashed.delete(t, X, k, snap, visible)
                if found is None:
                    new = hashed.find_slot(t, X, inum, h, visible)
                    t.update(X, xattr_key((inum, new, snap), x))
    batch.flush()
