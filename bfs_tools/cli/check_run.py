"""`bfs check` without click: the command's arguments and its run.

`check` runs in scripts and boot sequences, often on small images, where
starting up is much of its time (click alone is ~20 ms of a ~250 ms check of
the standard library). The `bfs` executable (cli/entry.py) gives plain
arguments to `check_args` and runs `run_check` without importing click;
anything else (help, usage errors, interactive repairs) goes through the click
command in cli/check_cmd.py, which runs the same `run_check`.
"""

from __future__ import annotations

import gc
import sys

from .plain import echo

# the options of check_cmd without a value: word -> (keyword, value)
_FLAGS = {"-n": ("mode", "no"), "-y": ("mode", "yes"), "-p": ("mode", "preen"),
          "-a": ("mode", "preen"), "-f": ("force", True), "--verify-data": ("verify_data", True),
          "--json": ("as_json", True), "-v": ("verbose", True), "--progress": ("progress", True),
          "--no-progress": ("progress", False)}


def check_args(args: list[str]) -> tuple[str, dict] | None:
    """(image, run_check keywords) for the words after `check` when they are
    plain: each a flag of check_cmd written out alone, one IMAGE not starting
    with '-', one mode of -n, -y, -p (click would take them the same way).
    None for anything else: click parses it and reports what is wrong."""
    image = None
    kw: dict = {}
    for a in args:
        flag = _FLAGS.get(a)
        if flag is not None:
            name, value = flag
            if name == "mode" and kw.get("mode", value) != value:
                return None     # two modes: click's usage error
            kw[name] = value
        elif a.startswith("-") or image is not None:
            return None
        else:
            image = a
    if image is None or "mode" not in kw:
        return None             # no mode: interactive repairs, which prompt through click
    kw.pop("force", None)   # (accepted, changes nothing)
    return image, kw


def run_check(image, mode: str, *, verify_data: bool = False, as_json: bool = False,
              verbose: bool = False, progress: bool | None = None, ask=None) -> int:
    """Check IMAGE in `mode` (no, yes, preen, or ask: through `ask(finding)`); the
    exit code."""
    from ..errors import BfsError
    from ..fsck.context import Cancelled, CheckContext
    from ..fsck.report import as_json as to_json
    from ..fsck.report import finding_line, summary_line
    from ..fsck.runner import finish, open_for_check, run_passes
    from ..gcpause import collector_paused

    if mode == "ask" and not (sys.stdin.isatty() and sys.stdout.isatty()):
        echo("bfs: error: need a terminal for interactive repairs; use -n, -y or -p", err=True)
        return 8
    try:
        store = open_for_check(image, mode)
    except BfsError as e:
        echo(f"bfs: error: {e}", err=True)
        return 8

    def on_finding(f):
        if not as_json:
            echo(finding_line(f))

    ctx = CheckContext(store, mode, verify_data=verify_data, verbose=verbose,
                       ask=ask, on_finding=on_finding)
    show_progress = sys.stderr.isatty() if progress is None else progress
    # The collector stays off until finish() has let go of the tree: switched on
    # again with every key read still alive, it would walk them all once for
    # nothing (~90 ms for 100,000 files; bfs_tools/gcpause.py).
    collector_on = gc.isenabled()
    with collector_paused():
        status = None
        try:
            if show_progress and not as_json:
                from .output import err_console

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
            echo("bfs: check cancelled; nothing written", err=True)
            return 32
        except BfsError as e:
            if status is not None:
                status.__exit__(None, None, None)
            store.abort()
            echo(f"bfs: error: {image}: {e}", err=True)
            return 8
        if status is not None:
            status.__exit__(None, None, None)
        # The bfs executable turns the collector off for good and ends in os._exit
        # (cli/entry.py): then nothing walks or frees the tree, so finish() leaves
        # it; with the collector on, it is released before a collection walks it.
        finish(ctx, release=collector_on)
    code = ctx.exit_code()
    if as_json:
        from .output import emit_json

        emit_json(to_json(ctx, image, code))
    else:
        echo(summary_line(ctx, image))
        if verbose:
            for name, secs in ctx.timings.items():
                echo(f"  {name}: {secs * 1000:.1f} ms")
    return code
