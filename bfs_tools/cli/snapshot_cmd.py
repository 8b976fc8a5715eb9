"""bfs snapshot create|delete|list and bfs subvolume create|delete|list."""

from __future__ import annotations

import click

from .output import emit_json, human, stdout_is_tty


def _open(image: str, write: bool = False):
    from ..fs.filesystem import Filesystem

    return Filesystem.open(image, write=write)


@click.group("snapshot")
def snapshot_group():
    """Snapshots: O(1) copies of a subvolume that share everything until changed."""


@snapshot_group.command("create")
@click.argument("image")
@click.argument("source_path")
@click.argument("dest_path")
@click.option("--read-only", "-r", "read_only", is_flag=True, help="Refuse writes to the snapshot.")
def snapshot_create(image, source_path, dest_path, read_only):
    """Snapshot the subvolume at SOURCE_PATH as DEST_PATH."""
    from ..snapshots.subvolume import create_snapshot

    with _open(image, write=True) as fs:
        sv = create_snapshot(fs, source_path, dest_path, read_only=read_only)
    click.echo(f"created snapshot {dest_path} (subvolume {sv}"
               f"{', read-only' if read_only else ''})", err=True)


@snapshot_group.command("delete")
@click.argument("image")
@click.argument("path")
def snapshot_delete(image, path):
    """Delete the snapshot at PATH (its space returns to the free pool)."""
    from ..snapshots.subvolume import delete_subvolume

    with _open(image, write=True) as fs:
        delete_subvolume(fs, path, expect_snapshot=True)


@snapshot_group.command("list")
@click.argument("image")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def snapshot_list(image, as_json):
    """The snapshot tree: ids, parents, subvolumes, paths, flags, usage."""
    from ..snapshots.subvolume import list_snapshots, list_subvolumes

    with _open(image) as fs:
        snaps = list_snapshots(fs)
        subvols = {s.id: s for s in list_subvolumes(fs)}
    if as_json:
        emit_json([{
            "id": s.id, "parent": s.parent, "children": s.children, "tree": s.tree,
            "depth": s.depth, "subvolume": s.subvol or None,
            "path": subvols[s.subvol].path if s.subvol in subvols else None,
            "read_only": subvols[s.subvol].read_only if s.subvol in subvols else None,
            "is_snapshot": subvols[s.subvol].is_snapshot if s.subvol in subvols else None,
            "deleted": s.deleted,
            "own_bytes": s.own_sectors * 512, "shared_bytes": s.shared_sectors * 512,
        } for s in snaps])
        return

    def label(s) -> str:
        sv = subvols.get(s.subvol)
        what = (f"subvol {s.subvol} {sv.path or '(unlinked)'}"
                + (" ro" if sv and sv.read_only else "") if s.subvol else "interior")
        dead = " DELETED" if s.deleted else ""
        return (f"{_sid(s.id)}  {what}{dead}  own {human(s.own_sectors * 512)}, "
                f"shared {human(s.shared_sectors * 512)}")

    if stdout_is_tty():
        from rich.tree import Tree

        from .output import console

        by_id = {s.id: s for s in snaps}
        for root in (s for s in snaps if not s.parent):
            tree = Tree(label(root))
            stack = [(root, tree)]
            while stack:
                node, t = stack.pop()
                for c in node.children:
                    if c in by_id:
                        stack.append((by_id[c], t.add(label(by_id[c]))))
            console().print(tree)
        return
    click.echo(f"{'ID':>10} {'PARENT':>10} {'SUBVOL':>6} {'RO':2} {'OWN':>10} {'SHARED':>10} PATH")
    for s in snaps:
        sv = subvols.get(s.subvol)
        path = (sv.path or "(unlinked)") if sv else ("(deleted)" if s.deleted else "-")
        click.echo(f"{_sid(s.id):>10} {_sid(s.parent) if s.parent else '-':>10} "
                   f"{s.subvol or '-':>6} {'ro' if sv and sv.read_only else '':2} "
                   f"{human(s.own_sectors * 512):>10} {human(s.shared_sectors * 512):>10} {path}")


def _sid(i: int) -> str:
    return "U32_MAX" if i == 0xFFFFFFFF else str(i)


@click.group("subvolume")
def subvolume_group():
    """Subvolumes: independent trees that can be snapshotted."""


@subvolume_group.command("create")
@click.argument("image")
@click.argument("path")
def subvolume_create(image, path):
    """Create an empty subvolume at PATH."""
    from ..snapshots.subvolume import create_subvolume

    with _open(image, write=True) as fs:
        create_subvolume(fs, path)


@subvolume_group.command("delete")
@click.argument("image")
@click.argument("path")
def subvolume_delete(image, path):
    """Delete the subvolume (or snapshot) at PATH and everything in it."""
    from ..snapshots.subvolume import delete_subvolume

    with _open(image, write=True) as fs:
        delete_subvolume(fs, path)


@subvolume_group.command("list")
@click.argument("image")
@click.argument("path", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def subvolume_list(image, path, as_json):
    """List subvolumes (under PATH if given)."""
    from ..snapshots.subvolume import list_subvolumes

    with _open(image) as fs:
        subvols = [s for s in list_subvolumes(fs) if not s.unlinked]
    if path:
        prefix = path.rstrip("/") + "/"
        subvols = [s for s in subvols if s.path and (s.path + "/").startswith(prefix)]
    if as_json:
        emit_json([{"id": s.id, "path": s.path, "snapshot": s.snapshot, "parent": s.parent,
                    "root_inode": s.inode, "read_only": s.read_only,
                    "is_snapshot": s.is_snapshot, "otime": s.otime_sec} for s in subvols])
        return
    click.echo(f"{'ID':>6} {'PARENT':>6} {'SNAPSHOT':>10} {'FLAGS':8} PATH")
    for s in subvols:
        flags = ",".join(f for f, on in (("ro", s.read_only), ("snap", s.is_snapshot)) if on) or "-"
        click.echo(f"{s.id:>6} {s.parent or '-':>6} {_sid(s.snapshot):>10} {flags:8} {s.path}")
