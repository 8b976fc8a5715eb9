"""`bfs cat IMAGE PATH` without click (cli/entry.py runs it for plain
arguments; the click command in files_cmd.py runs the same run_cat)."""

from __future__ import annotations

import sys


def cat_args(args: list[str]) -> tuple[str, str] | None:
    """(image, path) when the words after `cat` are exactly two that are not
    options; None for anything else (click parses it and reports what is wrong)."""
    if len(args) == 2 and not any(a.startswith("-") for a in args):
        return args[0], args[1]
    return None


def run_cat(image: str, path: str) -> int:
    """Write the file at `path` to stdout, every extent's checksum verified (a
    mismatch is an error naming the file and offset, after every good byte
    before it)."""
    from ..errors import IsADirError
    from ..fs.filesystem import Filesystem

    with Filesystem.open(image) as fs:
        r = fs.resolve(path, follow=True)
        if r.inode.is_dir:
            raise IsADirError(f"{r.path}: is a directory")
        out = sys.stdout.buffer
        for chunk in fs.iter_read(r.where, r.inode, r.path):
            out.write(chunk)
        out.flush()
    return 0
