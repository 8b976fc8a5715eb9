"""Shared fixtures: the installed `bfs` command, fresh images, loop devices.

Every image a test creates through `new_image`/`formatted` is checked with
`bfs check -n` after the test (xfstests' _check_filesystems), unless the test
is marked `damaged` (it leaves a broken image on purpose).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
BFS = str(BIN / "bfs")


class Result:
    def __init__(self, proc: subprocess.CompletedProcess):
        self.rc = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    @property
    def text(self) -> str:
        return self.out.decode("utf-8", "replace")

    @property
    def errtext(self) -> str:
        return self.err.decode("utf-8", "replace")

    def __repr__(self) -> str:
        return f"<rc={self.rc} out={self.out[:200]!r} err={self.err[:400]!r}>"


def run_bfs(*args, input: bytes | None = None, env: dict | None = None, check_rc: int | None = 0,
            timeout: float = 120) -> Result:
    full_env = dict(os.environ)
    full_env.pop("BFS_DEBUG", None)
    if env:
        full_env.update(env)
    proc = subprocess.run([BFS, *map(str, args)], input=input, capture_output=True,
                          env=full_env, timeout=timeout)
    res = Result(proc)
    if check_rc is not None and res.rc != check_rc:
        raise AssertionError(f"bfs {' '.join(map(str, args))}: expected rc {check_rc}, got {res}")
    return res


@pytest.fixture
def bfs():
    return run_bfs


_CHECKABLE: list[Path] = []


@pytest.fixture
def new_image(tmp_path, request):
    """Path of a not-yet-existing image in tmp_path; checked after the test."""
    counter = iter(range(1000))

    def make(name: str | None = None) -> Path:
        p = tmp_path / (name or f"img{next(counter)}.img")
        request.node._bfs_images = getattr(request.node, "_bfs_images", []) + [p]
        return p

    return make


@pytest.fixture
def formatted(new_image):
    """A freshly formatted image (64 MiB unless asked otherwise)."""

    def make(size: str = "64M", *extra) -> Path:
        p = new_image()
        run_bfs("format", p, "--size", size, *extra)
        return p

    return make


@pytest.fixture(autouse=True)
def _check_images_after(request):
    yield
    images = getattr(request.node, "_bfs_images", [])
    if request.node.get_closest_marker("damaged") or not images:
        return
    if not _check_available():
        return
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        return
    for img in images:
        if img.exists() and img.stat().st_size > 0:
            res = run_bfs("check", "-n", img, check_rc=None)
            assert res.rc == 0, f"bfs check -n {img} after the test: {res}"


def _check_available() -> bool:
    from bfs_tools.cli.main import COMMANDS

    return "check" in COMMANDS and _module_exists("bfs_tools.cli.check_cmd")


def _module_exists(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    setattr(item, "rep_" + rep.when, rep)


def have_root_loop() -> bool:
    return os.geteuid() == 0 and shutil.which("losetup") is not None and os.path.exists(
        "/dev/loop-control")


@pytest.fixture
def loopdev(tmp_path):
    """A loop device over a 64 MiB sparse file (root only; skipped otherwise)."""
    if not have_root_loop():
        pytest.skip("loop devices need root and losetup")
    backing = tmp_path / "loop-backing.img"
    with open(backing, "wb") as f:
        f.truncate(64 << 20)
    proc = subprocess.run(["losetup", "--find", "--show", str(backing)], capture_output=True,
                          text=True)
    if proc.returncode != 0:
        pytest.skip(f"losetup failed: {proc.stderr.strip()}")
    dev = proc.stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], capture_output=True)
