"""bfs check IMAGE [-n | -y | -p] [-f] [--verify-data] [--json] [-v] [--progress/--no-progress]

Exit codes follow fsck(8)/e2fsck: 0 clean, 1 errors corrected, 4 errors left
uncorrected, 8 operational error, 16 usage error, 32 cancelled by the user.

The check itself is cli/check_run.py run_check, which the `bfs` executable also
runs without click for plain arguments (cli/entry.py).
"""

from __future__ import annotations

import click


@click.command("check")
@click.argument("image")
@click.option("-n", "no", is_flag=True, help="Check only: open read-only, change nothing.")
@click.option("-y", "yes", is_flag=True, help="Repair everything repairable.")
@click.option("-p", "-a", "preen", is_flag=True, help="Repair what is safe; exit 4 for the rest.")
@click.option("-f", "force", is_flag=True, help="Accepted for e2fsck compatibility (checks are always full).")
@click.option("--verify-data", is_flag=True, help="Also read all file data and verify checksums.")
@click.option("--json", "as_json", is_flag=True, help="Print findings and summary as JSON.")
@click.option("-v", "verbose", is_flag=True, help="Show pass timings.")
@click.option("--progress/--no-progress", default=None, help="Per-pass progress on a terminal.")
def check_cmd(image, no, yes, preen, force, verify_data, as_json, verbose, progress):
    """Check IMAGE and repair it (-y, -p, or interactively on a terminal)."""
    if sum((no, yes, preen)) > 1:
        raise click.UsageError("only one of -n, -y, -p")
    from .check_run import run_check

    mode = "no" if no else "yes" if yes else "preen" if preen else "ask"
    raise SystemExit(run_check(image, mode, verify_data=verify_data, as_json=as_json,
                               verbose=verbose, progress=progress, ask=_ask))


def _ask(f) -> str:
    from ..fsck.report import finding_line
    from .output import message

    message(finding_line(f).rsplit(" [", 1)[0])
    while True:
        answer = click.prompt("fix? (y)es, (n)o, (a)ll, (q)uit", default="n",
                              show_default=False, err=True).strip().lower()
        if answer[:1] in ("y", "n", "a", "q"):
            return answer[:1]
