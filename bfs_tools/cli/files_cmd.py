"""debugfs-style file commands: ls, stat, cat, get, put, mkdir, rm, mv, ln."""

from __future__ import annotations

import os
import stat as statmod
import sys
import time

import click

from .output import emit_json, message


def _open(image: str, write: bool = False):
    from ..fs.filesystem import Filesystem

    return Filesystem.open(image, write=write)


# ---------------------------------------------------------------------- ls


def _mode_string(mode: int) -> str:
    return statmod.filemode(mode)


def _user(uid: int) -> str:
    try:
        import pwd

        return pwd.getpwuid(uid).pw_name
    except (KeyError, ImportError):
        return str(uid)


def _group(gid: int) -> str:
    try:
        import grp

        return grp.getgrgid(gid).gr_name
    except (KeyError, ImportError):
        return str(gid)


def _ls_time(sec: int) -> str:
    t = time.localtime(sec)
    six_months = 183 * 24 * 3600
    if abs(time.time() - sec) < six_months:
        return time.strftime("%b %e %H:%M", t)
    return time.strftime("%b %e  %Y", t)


def _safe(name: bytes, tty: bool) -> bytes:
    """On a terminal, control characters in names are shown as '?' (like ls)."""
    if not tty:
        return name
    return bytes(b if 32 <= b != 127 else 63 for b in name)


def _entry_json(fs, entry, inode) -> dict:
    out = {"name": entry.name.decode("utf-8", "surrogateescape"),
           "type": _type_name(inode.mode), "inode": entry.where.inum,
           "subvolume": entry.where.subvol, "snapshot": entry.where.snapshot,
           "mode": f"{statmod.S_IMODE(inode.mode):04o}", "mode_string": _mode_string(inode.mode),
           "nlink": inode.nlink, "uid": inode.uid, "gid": inode.gid, "size": inode.size,
           "sectors": inode.sectors,
           "mtime_ns": inode.mtime_sec * 1_000_000_000 + inode.mtime_nsec}
    try:
        entry.name.decode("utf-8")
    except UnicodeDecodeError:
        out["name_hex"] = entry.name.hex()
    if entry.dirent.is_subvol:
        out["is_subvolume_root"] = True
    if statmod.S_ISLNK(inode.mode):
        out["target"] = _link_target(fs, entry, inode).decode("utf-8", "surrogateescape")
    if statmod.S_ISCHR(inode.mode) or statmod.S_ISBLK(inode.mode):
        out["rdev"] = [os.major(inode.rdev), os.minor(inode.rdev)]
    return out


def _type_name(mode: int) -> str:
    return {statmod.S_IFREG: "file", statmod.S_IFDIR: "dir", statmod.S_IFLNK: "symlink",
            statmod.S_IFCHR: "char", statmod.S_IFBLK: "block", statmod.S_IFIFO: "fifo",
            statmod.S_IFSOCK: "socket"}.get(statmod.S_IFMT(mode), "unknown")


def _long_line(fs, entry, inode, tty: bool) -> bytes:
    if statmod.S_ISCHR(inode.mode) or statmod.S_ISBLK(inode.mode):
        size = f"{os.major(inode.rdev)}, {os.minor(inode.rdev)}"
    else:
        size = str(inode.size)
    head = (f"{_mode_string(inode.mode)} {inode.nlink} {_user(inode.uid)} {_group(inode.gid)} "
            f"{size:>8} {_ls_time(inode.mtime_sec)} ").encode()
    line = head + _safe(entry.name, tty)
    if statmod.S_ISLNK(inode.mode):
        line += b" -> " + _safe(_link_target(fs, entry, inode), tty)
    return line


_DAMAGED: list[str] = []     # what ls could not show because the image is damaged


def _link_target(fs, entry, inode) -> bytes:
    """A symlink's target for a listing; a damaged one is a warning and '?'."""
    from ..errors import FormatError

    shown = entry.name.decode("utf-8", "backslashreplace")
    try:
        return fs.read_all(entry.where, inode, shown)
    except FormatError as e:
        message(f"bfs: warning: {e}")
        _DAMAGED.append(shown)
        return b"?"


@click.command("ls")
@click.argument("image")
@click.argument("path", default="/")
@click.option("-l", "long", is_flag=True, help="Long listing (mode, links, owner, size, time).")
@click.option("-R", "recursive", is_flag=True, help="List subdirectories recursively.")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def ls_cmd(image, path, long, recursive, as_json):
    """List the directory PATH (default /) in IMAGE."""
    from ..formats.ids import DirentType
    from ..fs.filesystem import Entry

    with _open(image) as fs:
        r = fs.resolve(path, follow=True)
        if not r.inode.is_dir:
            entry = r.entry or Entry(r.name, None, None, r.where)
            if as_json:
                emit_json([_entry_json(fs, _plain_entry(entry, r), r.inode)])
            else:
                _write_lines([_long_line(fs, _plain_entry(entry, r), r.inode, _tty())
                              if long else _safe(r.name, _tty())])
            return
        todo = [(r.path, r.where)]
        out_json = []
        first = True
        seen = set()
        while todo:
            dpath, where = todo.pop(0)
            if (where.subvol, where.inum) in seen:
                continue
            seen.add((where.subvol, where.inum))
            entries = sorted(fs.readdir(where), key=lambda e: e.name)
            rows = []
            subdirs = []
            for e in entries:
                if long or as_json:
                    ino = fs.get_inode(e.where)
                    if ino is None:
                        message(f"bfs: warning: {dpath}/{e.name!r}: missing inode")
                        continue
                    is_dir = ino.is_dir
                else:   # names only: the dirent's type is enough (like ls without -l)
                    ino = None
                    is_dir = e.dirent.d_type in (DirentType.dir, DirentType.subvol)
                rows.append((e, ino))
                if is_dir:
                    subdirs.append((dpath.rstrip("/") + "/" + e.name.decode("utf-8", "surrogateescape"),
                                    e.where))
            if as_json:
                out_json.append({"path": dpath, "entries": [_entry_json(fs, e, i) for e, i in rows]})
            else:
                lines = []
                if recursive:
                    if not first:
                        lines.append(b"")
                    lines.append(dpath.encode("utf-8", "surrogateescape") + b":")
                for e, ino in rows:
                    lines.append(_long_line(fs, e, ino, _tty()) if long else _safe(e.name, _tty()))
                _write_lines(lines)
            first = False
            if recursive:
                todo = subdirs + todo
        if as_json:
            emit_json(out_json if recursive else out_json[0]["entries"])
    if _DAMAGED:
        raise SystemExit(3)


def _plain_entry(entry, r):
    from ..fs.dirent import Dirent
    from ..fs.filesystem import Entry

    if entry.dirent is not None:
        return entry
    return Entry(r.name or b"/", Dirent(r.where.inum, 0, r.name), None, r.where)


def _tty() -> bool:
    return sys.stdout.isatty()


def _write_lines(lines: list[bytes]) -> None:
    out = sys.stdout.buffer
    for line in lines:
        out.write(line + b"\n")
    out.flush()


# ---------------------------------------------------------------------- stat


@click.command("stat")
@click.argument("image")
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def stat_cmd(image, path, as_json):
    """Show the inode at PATH and its extents (which ones are shared)."""
    from ..fs.data import visible_extents
    from ..keys import key_to_json, key_to_text

    with _open(image) as fs:
        r = fs.resolve(path, follow=False)
        ino = r.inode
        keys = list(visible_extents(fs.btrees, r.where.inum, fs.visible(r.where.snapshot)))
        xattrs = fs.listxattr(r.where)
        if as_json:
            from ..fs.inode import Inode

            d = {f: getattr(ino, f) for f in Inode.__slots__ if not f.startswith("pad")}
            d["mode"] = f"{ino.mode:o}"
            d["type"] = _type_name(ino.mode)
            d["path"] = r.path
            d["subvolume"] = r.where.subvol
            d["snapshot"] = r.where.snapshot
            if ino.is_lnk:
                d["target"] = fs.read_all(r.where, ino, r.path).decode("utf-8", "surrogateescape")
            d["extents"] = [{**key_to_json(k), "shared": k.type == 15} for k in keys]
            d["xattrs"] = {x.full_name.decode("utf-8", "backslashreplace"): x.value.hex()
                           for x in xattrs}
            emit_json(d)
            return
        lines = [
            f"  File: {r.path}" + (f" -> {fs.read_all(r.where, ino, r.path).decode('utf-8', 'backslashreplace')}"
                                   if ino.is_lnk else ""),
            f"  Size: {ino.size:<12} Sectors: {ino.sectors:<10} Block: {fs.store.sb.block_size}"
            f"   {_type_name(ino.mode)}",
            f" Inode: {r.where.inum:<12} Links: {ino.nlink:<8} Subvolume: {r.where.subvol}  "
            f"Snapshot: {r.where.snapshot} (key in {ino.key_snapshot})",
            f"Access: ({statmod.S_IMODE(ino.mode):04o}/{_mode_string(ino.mode)})  "
            f"Uid: ({ino.uid}/{_user(ino.uid)})  Gid: ({ino.gid}/{_group(ino.gid)})",
        ]
        if statmod.S_ISCHR(ino.mode) or statmod.S_ISBLK(ino.mode):
            lines.append(f"Device: {os.major(ino.rdev)},{os.minor(ino.rdev)}")
        for label, s, ns in (("Access", ino.atime_sec, ino.atime_nsec),
                             ("Modify", ino.mtime_sec, ino.mtime_nsec),
                             ("Change", ino.ctime_sec, ino.ctime_nsec),
                             (" Birth", ino.btime_sec, ino.btime_nsec)):
            lines.append(f"{label}: {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(s))}"
                         f".{ns:09d}")
        if ino.dir:
            lines.append(f"Parent: inode {ino.dir} (dirent slot {ino.dir_offset})")
        lines.append(f"Extents: {len(keys)}")
        for k in keys:
            shared = "  shared" if k.type == 15 else ""
            lines.append(f"  bytes {k.start * 512}..{k.end * 512 - 1}: {key_to_text(k)}{shared}")
        if xattrs:
            lines.append(f"Xattrs: {len(xattrs)}")
            for x in xattrs:
                lines.append(f"  {x.full_name.decode('utf-8', 'backslashreplace')} "
                             f"({len(x.value)} bytes)")
        click.echo("\n".join(lines))


# ---------------------------------------------------------------------- cat / get


@click.command("cat")
@click.argument("image")
@click.argument("path")
def cat_cmd(image, path):
    """Write the contents of the file at PATH to stdout (checksums verified)."""
    from .cat_run import run_cat

    raise SystemExit(run_cat(image, path))


@click.command("get")
@click.argument("image")
@click.argument("path")
@click.argument("host_dest", type=click.Path())
@click.option("-r", "recursive", is_flag=True, help="Copy directories recursively.")
@click.option("--devices", is_flag=True, help="Recreate device nodes (root only).")
@click.option("--keep-setuid", is_flag=True, help="Keep setuid/setgid bits.")
def get_cmd(image, path, host_dest, recursive, devices, keep_setuid):
    """Copy PATH out of IMAGE to HOST_DEST (like cp -r: into HOST_DEST if it is a
    directory, else as HOST_DEST). Nothing is ever written outside HOST_DEST."""
    from ..extract import Extractor

    with _open(image) as fs:
        r = fs.resolve(path, follow=True)
        ex = Extractor(fs, devices=devices, keep_setuid=keep_setuid, overwrite=not r.inode.is_dir)
        try:
            rep = ex.get(r, host_dest, recursive=recursive)
        finally:
            ex.close()
    for s in rep.skipped:
        message(f"bfs: warning: {s}")
    if rep.skipped:
        # 3 when something was left out because the image is damaged, else 1
        message(f"bfs: error: {len(rep.skipped)} item(s) not extracted (see warnings above)")
        raise SystemExit(3 if rep.damaged else 1)


# ---------------------------------------------------------------------- put


@click.command("put")
@click.argument("image")
@click.argument("host_src", type=click.Path(exists=False))
@click.argument("path")
@click.option("-r", "recursive", is_flag=True, help="Copy directories recursively.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a tty).")
def put_cmd(image, host_src, path, recursive, progress):
    """Copy HOST_SRC into IMAGE at PATH (cp semantics; an existing file's contents
    are replaced in one transaction). Like cp, a symlink named as HOST_SRC is
    followed without -r and copied as a symlink with -r."""
    from ..errors import DeviceError, IsADirError, NotFoundError
    from ..fs.populate import Populator
    from .output import Progress

    follow = not recursive
    try:
        st = os.stat(host_src) if follow else os.lstat(host_src)
    except OSError as e:
        raise DeviceError(f"{host_src}: {e.strerror}") from None
    if statmod.S_ISDIR(st.st_mode) and not recursive:
        raise IsADirError(f"{host_src}: is a directory (use -r)")
    with _open(image, write=True) as fs:
        try:
            dest = fs.resolve(path, follow=True)
        except NotFoundError:
            dest = None
        with Progress("copying", enabled=progress) as bar:
            pop = Populator(fs, progress=bar)
            if dest is not None and dest.inode.is_dir:
                name = os.fsencode(os.path.basename(os.path.normpath(host_src)))
                if name in (b"", b".", b"..") and statmod.S_ISDIR(st.st_mode):
                    # `put -r . /dir` (or .., or /): no name of its own, so like cp -r the
                    # contents go into /dir
                    pop.copy_contents(host_src, dest.where, set_root_attrs=False)
                    name = None
                existing = fs.lookup(dest.where, dest.inode, name) if name else None
                if name is None:
                    pass
                elif existing is not None and not statmod.S_ISDIR(st.st_mode):
                    _replace(fs, existing.where, host_src, dest.path)
                elif existing is not None and statmod.S_ISDIR(st.st_mode):
                    pop.copy_contents(host_src, existing.where, set_root_attrs=False)
                else:
                    pop.copy_into(host_src, dest.where, name, follow=follow)
            elif dest is not None:
                if statmod.S_ISDIR(st.st_mode):
                    raise IsADirError(f"{path}: not a directory, cannot copy a directory over it")
                _replace(fs, dest.where, host_src, dest.path)
            else:
                parent, name = fs.resolve_parent(path)
                pop.copy_into(host_src, parent.where, name, follow=follow)
    for p in pop.report.problems:
        message(f"bfs: warning: {p}")
    if pop.report.problems:
        raise SystemExit(1)


def _replace(fs, where, host_src: str, shown: str) -> None:
    from ..errors import DeviceError

    try:
        fd = os.open(host_src, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise DeviceError(f"{host_src}: {e.strerror}") from None
    try:
        fs.replace_contents(where, _chunks(fd), shown)
    finally:
        os.close(fd)


def _chunks(fd: int, size: int = 4 << 20):
    while True:
        b = os.read(fd, size)
        if not b:
            return
        yield b


# ---------------------------------------------------------------------- mkdir / rm / mv / ln


@click.command("mkdir")
@click.argument("image")
@click.argument("path")
@click.option("-p", "parents", is_flag=True, help="Create parents as needed; no error if it exists.")
@click.option("-m", "--mode", "mode", default=None, help="Permission bits (octal), default 0777 & ~umask.")
def mkdir_cmd(image, path, parents, mode):
    """Create the directory PATH."""
    from ..errors import ExistsError, NotFoundError
    from ..fs.filesystem import split_path

    perm = int(mode, 8) if mode else (0o777 & ~_umask())
    with _open(image, write=True) as fs:
        if not parents:
            parent, name = fs.resolve_parent(path)
            fs.create(parent.where, name, statmod.S_IFDIR | perm)
            return
        parts = split_path(path)
        cur = "/"
        for part in parts:
            nxt = cur.rstrip("/") + "/" + part.decode("utf-8", "surrogateescape")
            try:
                r = fs.resolve(nxt)
                if not r.inode.is_dir:
                    raise ExistsError(f"{nxt}: exists and is not a directory")
            except NotFoundError:
                parent, name = fs.resolve_parent(nxt)
                fs.create(parent.where, name, statmod.S_IFDIR | perm)
            cur = nxt


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


@click.command("rm")
@click.argument("image")
@click.argument("path")
@click.option("-r", "recursive", is_flag=True, help="Remove directories and their contents.")
def rm_cmd(image, path, recursive):
    """Remove the file (or, with -r, the directory tree) at PATH."""
    from ..errors import IsADirError, UsageError

    with _open(image, write=True) as fs:
        r = fs.resolve(path, follow=False)
        if r.parent is None:
            raise UsageError("refusing to remove /")
        if r.inode.is_dir and not recursive:
            if r.entry is not None and r.entry.dirent.is_subvol:
                raise IsADirError(f"{r.path}: is a subvolume; use `bfs subvolume delete`")
            raise IsADirError(f"{r.path}: is a directory (use -r)")
        if r.inode.is_dir:
            _rm_tree(fs, r.where, r.path)
        fs.unlink(r.parent, r.name, allow_dir=True)


def _rm_tree(fs, where, path: str) -> None:
    """Empty directory `where` (depth first, without recursion)."""
    from ..errors import CorruptionError, IsADirError

    stack = [(where, path)]
    on_stack = {where}
    while stack:
        dwhere, dpath = stack[-1]
        pushed = False
        for e in fs.readdir(dwhere):
            shown = dpath.rstrip("/") + "/" + e.name.decode("utf-8", "backslashreplace")
            if e.dirent.is_subvol:
                raise IsADirError(f"{shown}: is a subvolume; delete it first")
            ino = fs.get_inode(e.where)
            if ino is not None and ino.is_dir and not fs.is_empty_dir(e.where):
                if e.where in on_stack:     # a damaged image: would loop forever
                    raise CorruptionError(f"{shown}: directory loop; run bfs check")
                stack.append((e.where, shown))
                on_stack.add(e.where)
                pushed = True
                break
            fs.unlink(dwhere, e.name, allow_dir=True)
        if not pushed:
            on_stack.discard(stack.pop()[0])


@click.command("mv")
@click.argument("image")
@click.argument("old")
@click.argument("new")
def mv_cmd(image, old, new):
    """Rename OLD to NEW (into NEW if it is an existing directory), atomically."""
    from ..errors import NotFoundError, UsageError

    with _open(image, write=True) as fs:
        src = fs.resolve(old, follow=False)
        if src.parent is None:
            raise UsageError("cannot move /")
        try:
            dst = fs.resolve(new, follow=True)
        except NotFoundError:
            dst = None
        if dst is not None and dst.inode.is_dir and dst.where != src.where:
            fs.rename(src.parent, src.name, dst.where, src.name)
        else:
            parent, name = fs.resolve_parent(new)
            fs.rename(src.parent, src.name, parent.where, name)


@click.command("ln")
@click.argument("image")
@click.argument("target")
@click.argument("path")
@click.option("-s", "symbolic", is_flag=True, help="Make a symbolic link to TARGET (any text).")
def ln_cmd(image, target, path, symbolic):
    """Make PATH a hard link to the file TARGET (or, with -s, a symlink holding TARGET)."""
    with _open(image, write=True) as fs:
        parent, name = fs.resolve_parent(path)
        if symbolic:
            fs.create(parent.where, name, statmod.S_IFLNK | 0o777, symlink=os.fsencode(target))
        else:
            t = fs.resolve(target, follow=False)
            fs.link(t.where, parent.where, name)
