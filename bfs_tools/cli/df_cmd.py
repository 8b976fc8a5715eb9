"""bfs df IMAGE [--json]: space used and free, from the accounting counters only."""

from __future__ import annotations

import click

from .output import emit_json


@click.command("df")
@click.argument("image")
@click.option("--json", "as_json", is_flag=True, help="Print as JSON.")
def df_cmd(image, as_json):
    """Size, used and free space of IMAGE, with a breakdown per data type.

    Reads only the persistent accounting counters (never walks the btrees).
    """
    from ..dump.usage import df_lines, df_report, read_usage
    from ..store import Store

    store = Store.open(image)
    try:
        report = df_report(read_usage(store.btrees), store.sb)
    finally:
        store.close()
    if as_json:
        emit_json({"image": image, **report})
    else:
        for line in df_lines(report, image):
            click.echo(line)
