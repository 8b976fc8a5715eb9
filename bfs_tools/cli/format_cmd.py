"""bfs format IMAGE [--size] [--block-size] [--bucket-size] [--btree-node-size] [--label]
[--uuid] [--source DIR] [--data-checksum] [--force] [--json]"""

from __future__ import annotations

import click

from .output import SIZE, emit_json, human


@click.command("format")
@click.argument("image")
@click.option("--size", type=SIZE, help="Size of the image (required to create a new file).")
@click.option("--block-size", type=SIZE, help="Block size, 512 to 64k (default 4k).")
@click.option("--bucket-size", type=SIZE, help="Bucket (allocation unit) size (default: by size).")
@click.option("--btree-node-size", type=SIZE, help="Btree node size (default min(256k, bucket)).")
@click.option("--label", "-L", default="", help="Volume label (up to 32 bytes).")
@click.option("--uuid", "-U", "uuid_", help="Filesystem UUID (default: random).")
@click.option("--source", type=click.Path(exists=True, file_okay=False),
              help="Populate the new filesystem from this directory.")
@click.option("--data-checksum", type=click.Choice(["crc32c", "crc64", "xxhash", "none"]),
              default="crc32c", show_default=True, help="Checksum of file data.")
@click.option("--force", "-f", is_flag=True, help="Overwrite an existing filesystem.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: on a tty).")
def format_cmd(image, size, block_size, bucket_size, btree_node_size, label, uuid_, source,
               data_checksum, force, as_json, progress):
    """Create a bfs filesystem on IMAGE (a file, created sparse if missing, or a device)."""
    from ..format import format_device, open_target, parse_uuid, plan_geometry
    from ..formats.ids import ChecksumType
    from ..superblock import read_superblock

    user_uuid = parse_uuid(uuid_) if uuid_ else None
    if label and len(label.encode()) > 32:
        raise click.BadParameter("at most 32 bytes", param_hint="--label")
    import os

    created = not os.path.exists(image)
    dev = open_target(image, size, force)
    ok = False
    try:
        geo = plan_geometry(dev.size, block_size=block_size, bucket_size=bucket_size,
                            btree_node_size=btree_node_size)
        populate = None
        report = {}
        if source is not None:
            from ..fs.populate import populate_from_directory
            from .term import Progress

            def populate(store):
                with Progress("copying", enabled=progress) as bar:
                    report.update(populate_from_directory(store, source, progress=bar))
        format_device(dev, geo, label=label, user_uuid=user_uuid,
                      data_csum=ChecksumType[data_checksum], populate=populate)
        rr = read_superblock(dev)
        ok = True
    finally:
        dev.close()
        if created and not ok:
            os.unlink(image)   # do not leave a half-made image file behind
    if as_json:
        from ..dump.super import super_to_dict

        out = super_to_dict(rr)
        if report:
            out["populate"] = report
        emit_json(out)
        return
    sb = rr.sb
    import uuid

    click.echo(f"bfs: formatted {image}: {human(sb.device_size)}, {sb.nbuckets} buckets of "
               f"{human(sb.bucket_size)}, block {human(sb.block_size)}, btree node "
               f"{human(sb.btree_node_size)}")
    click.echo(f"UUID {uuid.UUID(bytes=sb.user_uuid)}" + (f", label {sb.label_str!r}"
                                                          if sb.label_str else ""))
    if report:
        click.echo(f"copied {report.get('files', 0)} files, {report.get('dirs', 0)} directories, "
                   f"{human(report.get('bytes', 0))} from {source}")
        for problem in report.get("problems", []):
            click.echo(f"bfs: warning: {problem}", err=True)
