"""bfs dump super|journal|alloc|usage|btree|tree IMAGE [BTREE] [options]

Thin wrappers: the renderers live in bfs_tools/dump/. Every subcommand opens the
image read-only (an unclean image is recovered in memory, never written).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager

import click

from ..formats.ids import BtreeId
from .output import emit_json, emit_json_line, stdout_is_tty

BTREE_NAMES = [b.name for b in BtreeId]


class SnapshotIdType(click.ParamType):
    name = "ID"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        text = str(value).strip()
        try:
            v = 0xFFFFFFFF if text.upper() == "U32_MAX" else int(text, 0)
        except ValueError:
            self.fail(f"{value!r} is not a snapshot id (a number 1..U32_MAX)", param, ctx)
        if not 0 < v <= 0xFFFFFFFF:
            self.fail(f"{value!r} is out of range 1..U32_MAX", param, ctx)
        return v


class PosType(click.ParamType):
    name = "POS"

    def __init__(self, end: bool = False):
        self.end = end

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        from ..dump.btree import parse_pos
        from ..errors import UsageError

        try:
            return parse_pos(value, end=self.end)
        except UsageError as e:
            self.fail(str(e), param, ctx)


@contextmanager
def open_image(image: str):
    from ..store import Store

    store = Store.open(image)
    try:
        yield store
    finally:
        store.close()


def _echo_lines(lines) -> None:
    """Write lines to stdout (buffered: click.echo would flush after each one)."""
    write = sys.stdout.write
    for line in lines:
        write(line)
        write("\n")


@click.group("dump")
def dump_group():
    """Print on-disk structures as text (one key per line) or JSON."""


@dump_group.command("super")
@click.argument("image")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def dump_super(image, as_json):
    """Every superblock field, the layout and the state of each copy."""
    from ..dump.super import super_to_dict, super_to_text
    from ..io.device import FileDevice
    from ..superblock import read_superblock

    with FileDevice(image) as dev:
        rr = read_superblock(dev)
        size = dev.size
    need = rr.sb.nbuckets * rr.sb.bucket_size
    if size < need:
        click.echo(f"bfs: warning: image is truncated: {size} bytes, the filesystem needs "
                   f"{need}", err=True)
    if rr.used_backup:
        click.echo(f"bfs: warning: primary superblock unusable "
                   f"({rr.copies[0].status}); using the backup at byte {rr.sb.offset}", err=True)
    if as_json:
        emit_json(super_to_dict(rr))
    else:
        click.echo(super_to_text(rr), nl=False)


@dump_group.command("btree")
@click.argument("image")
@click.argument("name", metavar="BTREE", type=click.Choice(BTREE_NAMES, case_sensitive=False))
@click.option("--start", type=PosType(), help="First position (inode:offset[:snapshot]).")
@click.option("--end", type=PosType(end=True),
              help="Last position (inode:offset[:snapshot]; without snapshot: all of them).")
@click.option("--level", type=click.IntRange(0, 7),
              help="Show the nodes at this level (0: leaves) and their keys.")
@click.option("--snapshot", "snapshot", type=SnapshotIdType(),
              help="Show only what this snapshot sees (snapshot btrees).")
@click.option("--all-snapshots", is_flag=True, help="Show every version of every key (default).")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines: one object per key (or node).")
def dump_btree(image, name, start, end, level, snapshot, all_snapshots, as_json):
    """The keys of btree BTREE, one per line, in position order."""
    from ..dump import btree as d
    from ..formats.ids import SNAPSHOT_BTREES
    from ..keys import POS_MAX, POS_MIN

    btree_id = BtreeId[name.lower()]
    start = POS_MIN if start is None else start
    end = POS_MAX if end is None else end
    if snapshot is not None and all_snapshots:
        raise click.UsageError("--snapshot and --all-snapshots are mutually exclusive")
    if snapshot is not None and level is not None:
        raise click.UsageError("--snapshot cannot be combined with --level")
    if snapshot is not None and btree_id not in SNAPSHOT_BTREES:
        raise click.UsageError(
            f"btree {btree_id.name} has no snapshots; --snapshot applies to "
            f"{', '.join(sorted(b.name for b in SNAPSHOT_BTREES))}")
    if start > end:
        raise click.UsageError("--start is after --end")
    with open_image(image) as store:
        if level is not None:
            capacity = store.btrees.capacity
            for node, keys in d.nodes_at_level(store, btree_id, level, start, end):
                if as_json:
                    emit_json_line(d.node_to_json(node, capacity, keys))
                else:
                    _echo_lines(d.node_text(node, keys, capacity))
            return
        keys = d.iter_keys(store, btree_id, start, end, snapshot)
        if as_json:
            for obj in d.keys_json(keys, btree_id):
                emit_json_line(obj)
        else:
            _echo_lines(d.keys_text(keys))


@dump_group.command("journal")
@click.argument("image")
@click.option("--json", "as_json", is_flag=True, help="Print as one JSON document.")
def dump_journal(image, as_json):
    """Every valid journal entry in seq order, with its typed entries, and the damage found."""
    from ..dump import journal as d
    from ..io.device import FileDevice
    from ..superblock import read_superblock

    # No Store: the journal of an image whose btrees are damaged still dumps.
    with FileDevice(image) as dev:
        view = d.journal_view(dev, read_superblock(dev).sb)
        if as_json:
            emit_json(d.journal_to_dict(view))
        else:
            _echo_lines(d.journal_lines(view))


@dump_group.command("alloc")
@click.argument("image")
@click.option("--json", "as_json", is_flag=True, help="Print as one JSON document.")
def dump_alloc(image, as_json):
    """Allocation state: per-bucket alloc keys, free ranges, totals; a map on a terminal."""
    from ..dump import alloc as d

    with open_image(image) as store:
        view = d.alloc_view(store)
    if as_json:
        emit_json(d.alloc_to_dict(view))
        return
    _echo_lines(d.alloc_lines(view))
    if stdout_is_tty():
        from .output import console

        con = console()
        con.print()
        con.print(d.bucket_map(view, con.width), end="")


@dump_group.command("usage")
@click.argument("image")
@click.option("--json", "as_json", is_flag=True, help="Print as one JSON document.")
def dump_usage(image, as_json):
    """The space accounting counters: per data type, btree, snapshot; inodes; reflink."""
    from ..dump import usage as d

    with open_image(image) as store:
        u = d.read_usage(store.btrees)
        sb = store.sb
    if as_json:
        emit_json(d.usage_to_dict(u, sb))
    else:
        _echo_lines(d.usage_lines(u, sb))


@dump_group.command("tree")
@click.argument("image")
@click.argument("name", metavar="BTREE", type=click.Choice(BTREE_NAMES, case_sensitive=False))
@click.option("--max-children", type=click.IntRange(2, None), default=16, show_default=True,
              help="Children shown per node.")
@click.option("--max-nodes", type=click.IntRange(1, None), default=512, show_default=True,
              help="Nodes shown in all.")
def dump_tree(image, name, max_children, max_nodes):
    """The node structure of btree BTREE: levels, key ranges, keys per node, fill."""
    from ..dump import tree as d

    with open_image(image) as store:
        tree = d.build_tree(store, BtreeId[name.lower()], max_children=max_children,
                            max_nodes=max_nodes)
    if stdout_is_tty():
        from .output import console

        console().print(tree)
    else:
        click.echo(d.render_plain(tree), nl=False)
