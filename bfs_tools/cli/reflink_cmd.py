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
    from .cp_run import run_cp

    return run_cp(image, src_path, dst_path, recursive, reflink, progress)
