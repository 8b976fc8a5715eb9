"""The benchmarks' shared input: the machine's Python standard library tree.

"The machine's" is the standard library of the `python3` first on PATH, not
that of the interpreter running the benchmarks: `make bench` may run them on
another build (BENCH_PYTHON, the distribution's python3), and Debian's
/usr/lib/python3.11 leaves the test suite out (~1,400 files against ~7,700).
The rows then keep measuring the same tree whichever interpreter runs bfs.
"""

from __future__ import annotations

import shutil
import subprocess
import sysconfig
from pathlib import Path

_ASK = "import sysconfig; print(sysconfig.get_paths()['stdlib'])"


def stdlib_source() -> Path:
    """Where the standard library tree is (see the module's note)."""
    python = shutil.which("python3")
    if python is not None:
        out = subprocess.run([python, "-c", _ASK], capture_output=True, text=True)
        if out.returncode == 0 and Path(out.stdout.strip()).is_dir():
            return Path(out.stdout.strip())
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_tree(dest: Path) -> Path:
    """A private copy of the standard library tree at `dest` (site-packages
    excluded), made once."""
    if not dest.exists():
        shutil.copytree(stdlib_source(), dest, symlinks=True,
                        ignore=shutil.ignore_patterns("site-packages"))
    return dest


def stdlib_copy(work: Path) -> Path:
    """stdlib_tree at WORK/stdlib: the tree the populate, get and check rows use."""
    return stdlib_tree(work / "stdlib")
