"""`bfs cp` without click: the command's arguments and its run.

A copy of one file is compared with `cp -a --reflink=always` on a mounted
btrfs, where start-up is most of the time: click alone is ~25 ms of ~100 ms.
The `bfs` executable (cli/entry.py) gives plain arguments to `cp_args` and
runs `run_cp` without importing click; anything else (help, usage errors)
goes through the click command in cli/reflink_cmd.py, which runs the same
`run_cp`.
"""

from __future__ import annotations

# the options of cp_cmd without a value: word -> (keyword, value)
_FLAGS = {"-r": ("recursive", True), "-R": ("recursive", True),
          "--progress": ("progress", True), "--no-progress": ("progress", False)}
_REFLINK = ("auto", "always", "never")


def cp_args(args: list[str]) -> tuple[str, str, str, dict] | None:
    """(image, src_path, dst_path, run_cp keywords) for the words after `cp`
    when they are plain: three that are not options, and options of cp_cmd
    each written out alone (`--reflink` as `--reflink=X` or `--reflink X`,
    X one of auto, always, never), in any order; a repeated option's last
    value wins, as in click. None for anything else: click parses it and
    reports what is wrong."""
    words: list[str] = []
    kw: dict = {"recursive": False, "reflink": "auto", "progress": None}
    rest = iter(args)
    for a in rest:
        flag = _FLAGS.get(a)
        if flag is not None:
            kw[flag[0]] = flag[1]
        elif a == "--reflink" or a.startswith("--reflink="):
            value = next(rest, None) if a == "--reflink" else a[len("--reflink="):]
            if value not in _REFLINK:
                return None     # missing or not a choice: click's usage error
            kw["reflink"] = value
        elif a.startswith("-"):
            return None
        else:
            words.append(a)
    if len(words) != 3:
        return None
    return words[0], words[1], words[2], kw


def run_cp(image: str, src_path: str, dst_path: str, recursive: bool = False,
           reflink: str = "auto", progress: bool | None = None, *,
           ends_process: bool = False) -> int:
    """Copy src_path to dst_path inside IMAGE like cp -a (cp_cmd's help); the
    exit code. `ends_process`: the process ends in os._exit right after
    (cli/entry.py), which drops the image's objects with it; otherwise they are
    freed here, before the collector is back on."""
    from ..gcpause import collector_paused
    from .plain import keep_until_exit

    with collector_paused():
        made = _cp(image, src_path, dst_path, recursive, reflink, progress)
        if ends_process:
            # freeing them one by one is ~15-20 ms for a copy of the standard library
            keep_until_exit(made)
        else:
            # the image is closed: free its btree nodes now, by reference counting
            # (as linked nodes they would wait for the cyclic collector, which
            # then walks every key they hold: ~0.1 s once the collector is back on)
            made[0].store.btrees.release()
        del made
    return 0


def _cp(image, src_path, dst_path, recursive, reflink, progress) -> tuple:
    """The copy; what it made (the closed Filesystem, its transaction and the
    Copier), for run_cp to free or keep."""
    from ..errors import ExistsError, IsADirError, NotADirError, NotFoundError, UsageError
    from ..fs.filesystem import Filesystem
    from ..remap import Copier, commit
    from .term import Progress

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
    return fs, t, c
