"""bfs check IMAGE [-n | -y | -p] [-f] [--verify-data] [--json] [-v] [--progress/--no-progress]

Exit codes follow fsck(8)/e2fsck: 0 clean, 1 errors corrected, 4 errors left
uncorrected, 8 operational error, 16 usage error, 32 cancelled by the user.
"""

from __future__ import annotations

import sys

import click

from .output import emit_json, err_console, stderr_is_tty


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
    from ..errors import BfsError
    from ..fsck.context import Cancelled, CheckContext
    from ..fsck.report import as_json as to_json
    from ..fsck.report import finding_line, summary_line
    from ..fsck.runner import finish, open_for_check, run_passes

    if sum((no, yes, preen)) > 1:
        raise click.UsageError("only one of -n, -y, -p")
    mode = "no" if no else "yes" if yes else "preen" if preen else "ask"
    if mode == "ask" and not (sys.stdin.isatty() and sys.stdout.isatty()):
        click.echo("bfs: error: need a terminal for interactive repairs; use -n, -y or -p",
                   err=True)
        raise SystemExit(8)
    try:
        store = open_for_check(image, mode)
    except BfsError as e:
        click.echo(f"bfs: error: {e}", err=True)
        raise SystemExit(8) from None

    def on_finding(f):
        if not as_json:
            click.echo(finding_line(f))

    ctx = CheckContext(store, mode, verify_data=verify_data, verbose=verbose,
                       ask=_ask, on_finding=on_finding)
    show_progress = stderr_is_tty() if progress is None else progress
    status = None
    try:
        if show_progress and not as_json:
            status = err_console().status("checking")
            status.__enter__()

            def progress_cb(pid, name):
                status.update(f"pass {pid}: {name}")
        else:
            progress_cb = None
        run_passes(ctx, progress=progress_cb)
    except Cancelled:
        if status is not None:
            status.__exit__(None, None, None)
        store.abort()
        click.echo("bfs: check cancelled; nothing written", err=True)
        raise SystemExit(32) from None
    except BfsError as e:
        if status is not None:
            status.__exit__(None, None, None)
        store.abort()
        click.echo(f"bfs: error: {image}: {e}", err=True)
        raise SystemExit(8) from None
    if status is not None:
        status.__exit__(None, None, None)
    finish(ctx)
    code = ctx.exit_code()
    if as_json:
        emit_json(to_json(ctx, image, code))
    else:
        click.echo(summary_line(ctx, image))
        if verbose:
            for name, secs in ctx.timings.items():
                click.echo(f"  {name}: {secs * 1000:.1f} ms")
    raise SystemExit(code)


def _ask(f) -> str:
    from ..fsck.report import finding_line
    from .output import message

    message(finding_line(f).rsplit(" [", 1)[0])
    while True:
        answer = click.prompt("fix? (y)es, (n)o, (a)ll, (q)uit", default="n",
                              show_default=False, err=True).strip().lower()
        if answer[:1] in ("y", "n", "a", "q"):
            return answer[:1]
