"""`bfs reflink` (FICLONE / FICLONERANGE) and `bfs cp` (cp -a, with --reflink)."""

from __future__ import annotations

import click

from .output import SIZE


@click.command("reflink")
@click.argument("image")
@click.argument("src_path")
@click.argument("dst_path")
@click.option("--src-offset", type=SIZE, default=0, show_default=True,
              help="Byte offset in SRC_PATH (a multiple of the block size).")
@click.option("--dst-offset", type=SIZE, default=0, show_default=True,
              help="Byte offset in DST_PATH (a multiple of the block size).")
@click.option("--length", type=SIZE, default=0,
              help="Bytes to share (a multiple of the block size unless the range ends at "
                   "the source's end of file); default 0 = to the end of SRC_PATH.")
def reflink_cmd(image, src_path, dst_path, src_offset, dst_offset, length):
    """Share the data of SRC_PATH with DST_PATH without copying it.

    Without offsets the whole file is shared and DST_PATH becomes an exact copy
    (created if missing, its old data dropped). With --src-offset/--dst-offset/
    --length only that range is replaced, like FICLONERANGE, and DST_PATH grows
    to cover it. Later writes to either file are copy-on-write; the others keep
    their data. One transaction: all or nothing.
    """
    from ..fs.filesystem import Filesystem
    from ..remap import reflink_paths

    with Filesystem.open(image, write=True) as fs:
        reflink_paths(fs, src_path, dst_path, src_offset=src_offset, dst_offset=dst_offset,
                      length=length)


@click.command("cp")
@click.argument("image")
@click.argument("src_path")
@click.argument("dst_path")
@click.option("-r", "-R", "recursive", is_flag=True, help="Copy directories recursively.")
@click.option("--reflink", "reflink", type=click.Choice(["auto", "always", "never"]),
              default="auto", show_default=True,
              help="Share file data (auto: where possible, else copy; always: fail where "
                   "it cannot be shared; never: copy the data).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a tty).")
def cp_cmd(image, src_path, dst_path, recursive, reflink, progress):
    """Copy SRC_PATH to DST_PATH inside IMAGE, like cp -a: into DST_PATH if it is a
    directory; mode, owner, times, xattrs, symlinks and hard links (within the
    copied tree) are kept. File data is shared (reflink) unless --reflink=never.
    One transaction: all or nothing."""
    from ..gcpause import collector_paused

    with collector_paused():
        # (in a function of its own: what the copy made is gone, freed by reference
        # counting, when the collector comes back)
        _cp(image, src_path, dst_path, recursive, reflink, progress)


def _cp(image, src_path, dst_path, recursive, reflink, progress):
    from ..errors import ExistsError, IsADirError, NotADirError, NotFoundError, UsageError
    from ..fs.filesystem import Filesystem
    from ..remap import Copier, commit
    from .output import Progress

    with Filesystem.open(image, write=True) as fs:
        t = fs.store.transaction()
        src = fs.resolve(src_path, follow=False, src=t)
        if src.inode.is_dir and not recursive:
            raise IsADirError(f"{src.path}: is a directory (use -r)")
        try:
            dst = fs.resolve(dst_path, follow=True, src=t)
        except NotFoundError:
            dst = None
        existing = None
        if dst is not None and dst.inode.is_dir:
            if src.parent is None:
                raise UsageError(f"cannot copy {src.path} into itself")
            parent_where, parent_inode, name = dst.where, dst.inode, src.name
            existing = fs.lookup(parent_where, parent_inode, name, t)
            target_path = dst.path.rstrip("/") + "/" + name.decode("utf-8", "surrogateescape")
        elif dst is not None:
            if src.inode.is_dir:
                raise NotADirError(f"{dst.path}: cannot overwrite a non-directory with a "
                                   "directory")
            if dst.entry is None:
                raise UsageError(f"{dst.path}: cannot be replaced")
            parent_where, name = dst.parent, dst.entry.name
            parent_inode = fs.inode(parent_where, t)
            existing = dst.entry
            target_path = dst.path
        else:
            parent, name = fs.resolve_parent(dst_path, src=t)
            parent_where, parent_inode = parent.where, parent.inode
            target_path = parent.path.rstrip("/") + "/" + name.decode("utf-8", "surrogateescape")
        fs.check_writable(parent_where, t)
        if src.inode.is_dir and fs._is_ancestor_dir(src.where, parent_where, t):
            raise UsageError(f"cannot copy a directory, {src.path}, into itself, {target_path}")
        with Progress("copying", enabled=progress) as bar:
            c = Copier(fs, t, reflink, progress=bar)
            if existing is None:
                c.copy(src.where, src.inode, parent_where, name, target_path)
            else:
                ex_inode = fs.inode(existing.where, t)
                if existing.where.subvol == src.where.subvol and \
                        existing.where.inum == src.where.inum:
                    raise UsageError(f"{src.path} and {target_path} are the same file")
                if src.inode.is_dir:
                    if not ex_inode.is_dir:
                        raise NotADirError(f"{target_path}: cannot overwrite a non-directory "
                                           "with a directory")
                    c.copy_children(src.where, existing.where, ex_inode, target_path)
                elif ex_inode.is_dir:
                    raise IsADirError(f"{target_path}: cannot overwrite a directory with a "
                                      "non-directory")
                elif not (src.inode.is_reg and ex_inode.is_reg):
                    raise ExistsError(f"{target_path}: already exists")
                else:
                    fs.check_writable(existing.where, t)
                    c.file_data(src.where, src.inode, existing.where, ex_inode, fresh=False,
                                what=target_path)
                    ex_inode.mode = src.inode.mode
                    ex_inode.uid, ex_inode.gid = src.inode.uid, src.inode.gid
                    ex_inode.atime_sec, ex_inode.atime_nsec = src.inode.atime_sec, \
                        src.inode.atime_nsec
                    ex_inode.mtime_sec, ex_inode.mtime_nsec = src.inode.mtime_sec, \
                        src.inode.mtime_nsec
                    fs.put_inode(t, existing.where, ex_inode)
                    c.copy_xattrs(src.where, existing.where)
            c.finish()
        commit(t)
    # the image is closed: free its btree nodes now, by reference counting (as
    # linked nodes they would wait for the cyclic collector, which then walks
    # every key they hold: ~0.1 s once the collector is back on)
    fs.store.btrees.release()
