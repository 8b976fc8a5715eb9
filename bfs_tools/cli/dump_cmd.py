"""bfs dump super|journal|alloc|usage|btree|tree IMAGE [BTREE] [options]"""

from __future__ import annotations

import click

from .output import emit_json


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
