"""The root click group of `bfs`, lazy command loading, click's errors.

Commands are imported only when invoked, so `bfs --help` starts fast. Every
error becomes one line `bfs: error: ...` on stderr and a documented exit code
(bfs_tools/errors.py; `check` follows fsck(8)); BFS_DEBUG=1 or --debug shows
the traceback instead.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys

import click

from .. import __version__

# name -> (module, attribute, short help). Help text lives here so listing the
# commands imports nothing.
COMMANDS: dict[str, tuple[str, str, str]] = {
    "format": ("format_cmd", "format_cmd", "Create a bfs filesystem on an image or device."),
    "check": ("check_cmd", "check_cmd", "Check and repair a filesystem (fsck)."),
    "dump": ("dump_cmd", "dump_group", "Print the superblock, journal, btrees or alloc state."),
    "snapshot": ("snapshot_cmd", "snapshot_group", "Create, delete and list snapshots."),
    "subvolume": ("snapshot_cmd", "subvolume_group", "Create, delete and list subvolumes."),
    "ls": ("files_cmd", "ls_cmd", "List a directory."),
    "stat": ("files_cmd", "stat_cmd", "Show an inode and its extents."),
    "cat": ("files_cmd", "cat_cmd", "Write a file's contents to stdout."),
    "get": ("files_cmd", "get_cmd", "Copy files out of the image."),
    "put": ("files_cmd", "put_cmd", "Copy files into the image."),
    "mkdir": ("files_cmd", "mkdir_cmd", "Create a directory."),
    "rm": ("files_cmd", "rm_cmd", "Remove a file or directory."),
    "mv": ("files_cmd", "mv_cmd", "Rename or move a file or directory."),
    "ln": ("files_cmd", "ln_cmd", "Make a hard or symbolic link."),
    "df": ("df_cmd", "df_cmd", "Show size, used and free space (from the accounting counters)."),
    "reflink": ("reflink_cmd", "reflink_cmd", "Share a file's data (or a range) with another file."),
    "cp": ("reflink_cmd", "cp_cmd", "Copy files inside the image, sharing their data (cp -a)."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        entry = COMMANDS.get(name)
        if entry is None:
            return None
        module = importlib.import_module(f"{__package__}.{entry[0]}")
        return getattr(module, entry[1])

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_) for name, (_m, _a, help_) in COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"],
                                               "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="bfs")
@click.option("--debug", is_flag=True, help="Show Python tracebacks on errors.")
def cli(debug: bool) -> None:
    """Tools for bfs, a bcachefs-style copy-on-write B-tree filesystem.

    IMAGE is a regular image file or a block device. Paths inside the image are
    absolute (/a/b). Sizes accept binary suffixes: 4k, 256M, 1G, 16T.
    """
    if debug:
        os.environ["BFS_DEBUG"] = "1"


def _is_check(argv: list[str]) -> bool:
    """Is the command `check` (whose errors follow fsck(8) exit codes)?"""
    words = [a for a in argv if not a.startswith("-")]
    return bool(words) and words[0] == "check"


def main(argv: list[str] | None = None) -> None:
    """Run one command and exit with its code (SystemExit: in-process callers, the
    tests and the benchmarks' profilers, catch it). The executable is
    cli/entry.py."""
    sys.exit(run(argv))


def run(argv: list[str] | None = None) -> int:
    """Run one command through click; its exit code."""
    from .plain import error, failure_code, flush_stdout

    argv = list(sys.argv[1:] if argv is None else argv)
    # `bfs ls IMG | head`: end quietly when the reader goes away, like coreutils
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)

    is_check = _is_check(argv)
    debug = bool(os.environ.get("BFS_DEBUG")) or "--debug" in argv
    try:
        rv = cli.main(args=argv, prog_name="bfs", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except click.exceptions.Exit as e:
        code = e.exit_code
    except click.exceptions.Abort:
        error("cancelled")
        code = 32 if is_check else 130
    except click.UsageError as e:
        where = e.ctx.command_path if e.ctx is not None else "bfs"
        error(f"{e.format_message()} (see '{where} --help')")
        code = 16 if is_check else 2
    except click.ClickException as e:
        error(e.format_message())
        code = 8 if is_check else e.exit_code
    except (Exception, KeyboardInterrupt) as e:
        code = failure_code(e, is_check, debug)
    flush_stdout()
    return code
