"""Crash-consistency harness: record a workload of commands, replay every crash state.

A *workload* is a short list of commands (`Cmd`), each exactly what one `bfs`
invocation does: the real CLI code run in this process (tests/fsck/lib.run_cli)
against a `RecordingDevice`, or, for the operations that have no command of
their own (overwrite and truncate at an offset), the Filesystem call wrapped in
the same open / operation / close a command performs. `image_on(dev)` makes the
CLI open a device instead of an image file: the image path `IMAGE` names it.

Recording (`record`): the device starts as a small formatted image (or, for
`format --source`, an empty or old device); every write and flush is logged.
After each command the visible tree is captured (`capture`): the *model*.
Each command's log range and the log index of every flush journal entry it
wrote (its commit points) are noted.

Checking (`check_recording`), for every crash state of the log
(bfs_tools/io/crash.py: flush prefixes, then subsets, reorderings, drops and
torn sectors of the pending writes of each epoch; seeded, deduplicated):
  * `check -n` through the Python API (fsck runner on the device, read-only,
    journal replayed in memory) reports nothing;
  * the visible tree equals one model exactly: commands are sequential and
    every one ends with a commit, so the state is "after command k" where k is
    the number of commands whose first commit point reached the medium intact
    (a flush journal entry is written alone between two device flushes, so it
    either reached the medium or not; a torn one does not count). Everything
    committed before is visible, the command in flight is entirely present or
    entirely absent. A command that commits several times (snapshot delete:
    the unlink, then cleanup batches, then the snapshot tree rewrite) shows
    its whole effect from its first commit on: later commits must not change
    what any live snapshot sees;
  * with `reopen`, the state is also opened writable and closed (recovery made
    durable, an interrupted snapshot deletion finished — what the next command
    would do), then checked and captured again: the same tree, check clean.

`format --source` is the exception to the commit rule: its commit point is the
first superblock write. Its states must either hold no filesystem (`absent`: not
a bfs image; or, formatting over an old filesystem, that one intact) or the new
filesystem complete.

A failure names the workload and the state (`CrashState.describe()`); the state
can be rebuilt from the recording with bfs_tools.io.crash.rebuild.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from bfs_tools.errors import BfsError, NotBfsError, ReadOnlyError
from bfs_tools.format import format_device, plan_geometry
from bfs_tools.io.crash import CrashLimits, CrashState, crash_states, write_intact
from bfs_tools.io.device import Device, FlushOp, MemoryDevice, RecordingDevice, WriteOp
from bfs_tools.journal.entries import JsetHeader
from bfs_tools.journal.writer import Journal
from tests.fsck import lib

# the image path commands get: the device under test (never a file: `image_on`
# intercepts it; its directory exists because `format` wants one)
IMAGE = os.path.join(tempfile.gettempdir(), "bfs-crash-device-under-test.img")

# small images: few buckets, several nodes per btree, sub-block writes
GEOMETRY = {"size": 4 << 20, "bucket": 16384, "node": 4096, "block": 512}
FORMAT_ARGS = ["--size", "4M", "--bucket-size", "16k", "--btree-node-size", "4k",
               "--block-size", "512"]


def formatted_device(size: int = GEOMETRY["size"], bucket: int = GEOMETRY["bucket"],
                     node: int = GEOMETRY["node"], block: int = GEOMETRY["block"]) -> MemoryDevice:
    dev = MemoryDevice(size)
    format_device(dev, plan_geometry(size, bucket_size=bucket, btree_node_size=node,
                                     block_size=block))
    return dev


# ---------------------------------------------------------------------- the device as an image


class _ImageDevice(Device):
    """What `FileDevice(IMAGE)` returns while `image_on` is active: the device
    under test, which the command may not close."""

    def __init__(self, inner: Device, write: bool):
        self.inner = inner
        self.name = IMAGE
        self.size = inner.size
        self.writable = write

    def read(self, offset: int, length: int) -> bytes:
        return self.inner.read(offset, length)

    def write(self, offset: int, data) -> None:
        if not self.writable:
            raise ReadOnlyError(f"{self.name}: opened read-only")
        self.inner.write(offset, data)

    def flush(self) -> None:
        self.inner.flush()

    def discard(self, offset: int, length: int) -> None:
        if self.writable:
            self.inner.discard(offset, length)


@contextlib.contextmanager
def image_on(dev: Device):
    """Commands run in this block open `IMAGE` as `dev` (everything else as usual)."""
    import bfs_tools.format as fmt
    import bfs_tools.io.device as device
    import bfs_tools.store as store

    real = device.FileDevice

    def file_device(path, *, write: bool = False, create_size: int | None = None):
        if str(path) != IMAGE:
            return real(path, write=write, create_size=create_size)
        if create_size is not None and create_size != dev.size:
            raise AssertionError(f"format --size {create_size}: the device has {dev.size} bytes")
        return _ImageDevice(dev, write)

    saved = (device.FileDevice, store.FileDevice, fmt.FileDevice)
    device.FileDevice = store.FileDevice = fmt.FileDevice = file_device
    try:
        yield
    finally:
        device.FileDevice, store.FileDevice, fmt.FileDevice = saved


# ---------------------------------------------------------------------- commands


@dataclass(frozen=True)
class Cmd:
    """One command: `argv` of `bfs` (IMAGE where the image goes), or `api`, a
    function of an open writable Filesystem (run like a command: open, call, close)."""

    name: str
    argv: tuple[str, ...] = ()
    api: Callable | None = None
    format: bool = False        # format --source: the commit rule is the superblock's
    context: Callable | None = None   # a context manager factory the command runs in

    def __str__(self) -> str:
        return self.name


def run(cmd: Cmd, dev: Device) -> tuple[int, str]:
    """Run `cmd` on `dev`: (exit code, stderr). Exit 70 (internal error) raises."""
    with cmd.context() if cmd.context is not None else contextlib.nullcontext():
        return _run(cmd, dev)


def _run(cmd: Cmd, dev: Device) -> tuple[int, str]:
    if cmd.api is not None:
        from bfs_tools.fs.filesystem import Filesystem

        try:
            fs = Filesystem.open(dev, write=True)
        except BfsError as e:
            return e.exit_code, str(e)
        try:
            cmd.api(fs)
        except BfsError as e:
            fs.abort()
            return e.exit_code, str(e)
        except BaseException:
            fs.abort()
            raise
        fs.close()
        return 0, ""
    with image_on(dev):
        r = lib.run_cli(*cmd.argv, timeout=None)
    if r.crashed or r.rc == 70:
        raise AssertionError(f"bfs {' '.join(cmd.argv)}: crashed: {r}")
    return r.rc, r.err.strip()


# ---------------------------------------------------------------------- the model


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


ABSENT = {"absent": True}       # the model of a device that holds no filesystem


def capture(dev: Device, *, times: bool = True) -> dict:
    """The visible tree of the image on `dev` (opened read-only: a journal replay
    happens in memory): every path reachable from / through subvolumes and
    snapshots with its type, mode, owner, size, link count, contents (sha256),
    symlink target, xattrs, hard-link group and (with `times`) times; and the
    list of live subvolumes. Raises BfsError when the image does not open; a file
    that does not read back (checksums verified) is described as unreadable."""
    from bfs_tools.fs.filesystem import Filesystem
    from bfs_tools.snapshots.subvolume import list_subvolumes

    fs = Filesystem.open(dev)
    try:
        subvols = sorted((s.id, s.path, s.read_only, s.is_snapshot, s.snapshot)
                         for s in list_subvolumes(fs) if not s.unlinked)
        nodes: dict[str, dict] = {}
        names: dict[tuple[int, int], list[str]] = {}

        def describe(path: str, where, ino, d_type=None) -> None:
            n = {"type": stat.S_IFMT(ino.mode), "mode": stat.S_IMODE(ino.mode), "uid": ino.uid,
                 "gid": ino.gid, "nlink": ino.nlink, "size": ino.size,
                 "xattrs": tuple(sorted((x.full_name, _sha(x.value))
                                        for x in fs.listxattr(where)))}
            if d_type is not None:
                n["d_type"] = d_type
            if times:
                n["times"] = (ino.atime_sec, ino.atime_nsec, ino.mtime_sec, ino.mtime_nsec,
                              ino.ctime_sec, ino.ctime_nsec)
            try:
                if ino.is_reg:
                    n["data"] = _sha(fs.read_all(where, ino, path))
                elif ino.is_lnk:
                    n["target"] = fs.read_all(where, ino, path)
            except BfsError as e:     # (a repaired image may hold data marked lost)
                n["data"] = f"unreadable: {type(e).__name__}"
            if not (ino.is_dir or ino.is_reg or ino.is_lnk):
                n["rdev"] = ino.rdev
            nodes[path] = n
            if not ino.is_dir:
                names.setdefault((where.subvol, where.inum), []).append(path)

        root = fs.root()
        describe("/", root, fs.inode(root))
        stack = [("", root)]
        seen = set()
        while stack:
            prefix, where = stack.pop()
            if (where.subvol, where.inum) in seen:
                raise AssertionError(f"{prefix}: directory loop")
            seen.add((where.subvol, where.inum))
            for e in fs.readdir(where):
                p = prefix + "/" + e.name.decode("utf-8", "surrogateescape")
                ino = fs.inode(e.where)
                describe(p, e.where, ino, int(e.dirent.d_type))
                if ino.is_dir:
                    stack.append((p, e.where))
        for paths in names.values():
            for p in paths:
                nodes[p]["links"] = min(paths)
        return {"subvolumes": subvols, "tree": nodes}
    finally:
        fs.close()


def diff(got: dict, want: dict) -> str:
    """What differs between two models, in a few lines."""
    if got == want:
        return "equal"
    if "absent" in got or "absent" in want:
        return f"got {'no filesystem' if 'absent' in got else 'a filesystem'}, want " \
               f"{'no filesystem' if 'absent' in want else 'a filesystem'}"
    out = []
    if got["subvolumes"] != want["subvolumes"]:
        out.append(f"subvolumes {got['subvolumes']} != {want['subvolumes']}")
    g, w = got["tree"], want["tree"]
    for p in sorted(set(w) - set(g))[:5]:
        out.append(f"missing {p}")
    for p in sorted(set(g) - set(w))[:5]:
        out.append(f"extra {p}")
    for p in sorted(set(g) & set(w)):
        if g[p] != w[p] and len(out) < 12:
            fields = sorted(k for k in set(g[p]) | set(w[p]) if g[p].get(k) != w[p].get(k))
            out.append(f"{p}: " + ", ".join(f"{k} {g[p].get(k)!r} != {w[p].get(k)!r}"
                                             for k in fields))
    return "; ".join(out)


# Findings a crash may legitimately leave (warnings: check -n still exits 0):
# a superblock copy or the layout record one write behind or torn (an
# interrupted superblock write; every writable open rewrites them all), a torn
# journal entry at the head of the ring (the commit in flight).
CRASH_WARNINGS = {"sb_primary_bad", "sb_backup_bad", "sb_layout_bad", "journal_entry_bad_csum"}


def check_n(dev: Device, *, strict: bool = False) -> list[str]:
    """`bfs check -n` through the API: the findings other than the warnings a crash
    may leave (CRASH_WARNINGS; every finding with `strict`). The device is not
    written."""
    from bfs_tools.fsck.context import CheckContext
    from bfs_tools.fsck.runner import finish, open_for_check, run_passes

    store = open_for_check(dev, "no")
    ctx = CheckContext(store, "no")
    try:
        run_passes(ctx)
    finally:
        finish(ctx)
    return [f"{f.error.name} ({f.pass_name}) {f.location}: {f.message}" for f in ctx.findings
            if strict or not (f.error.severity == "warning" and f.error.name in CRASH_WARNINGS)]


def check_y(dev: Device, args: tuple[str, ...] = ()) -> tuple[int, list]:
    """`bfs check -y [args]` through the API on `dev`: (exit code, findings)."""
    from bfs_tools.fsck.context import CheckContext
    from bfs_tools.fsck.runner import finish, open_for_check, run_passes

    store = open_for_check(dev, "yes")
    ctx = CheckContext(store, "yes", verify_data="--verify-data" in args)
    try:
        run_passes(ctx)
    except BaseException:
        store.abort()
        raise
    finish(ctx)
    return ctx.exit_code(), ctx.findings


def crash_findings_only(findings) -> bool:
    """Only the warnings a crash may leave (CRASH_WARNINGS)?"""
    return all(f.error.severity == "warning" and f.error.name in CRASH_WARNINGS
               for f in findings)


# ---------------------------------------------------------------------- recording


@dataclass
class Done:
    """A command as it ran: its log range, commit points and outcome."""

    cmd: Cmd
    start: int
    end: int
    commits: list[int] = field(default_factory=list)   # log indices of its flush entries
    rc: int = 0
    err: str = ""


@dataclass
class Recording:
    name: str
    base: MemoryDevice
    log: list
    done: list[Done]
    models: list[dict]         # models[k]: the tree after k commands

    def expected(self, state: CrashState, dev: MemoryDevice) -> int:
        """Index of the model the state must show (see the module docstring)."""
        k = 0
        for i, d in enumerate(self.done):
            if d.cmd.format:
                continue
            if d.commits and _reached_intact(self.log, d.commits[0], state, dev):
                k = i + 1
        return k

    def allowed(self, state: CrashState, dev: MemoryDevice) -> list[int]:
        """Models the state may show: exactly one, except for format --source."""
        k = self.expected(state, dev)
        fmt = [i for i, d in enumerate(self.done) if d.cmd.format
               and d.start < state.point and i >= k]
        if not fmt:
            return [k]
        i = fmt[0]
        return [i, i + 1]


def _reached_intact(log: list, idx: int, state: CrashState, dev: MemoryDevice) -> bool:
    if idx < state.durable:
        return True
    if idx >= state.point or not state.reached(idx):
        return False
    op = log[idx]
    # the bytes the entry's checksum covers (its block padding does not matter)
    length = JsetHeader.SIZE + JsetHeader.unpack(op.data).bytes
    return write_intact(dev, op, length)


@contextlib.contextmanager
def _track_commits(rec_dev: RecordingDevice, out: list[int]):
    """Append to `out` the log index of every flush journal entry written to rec_dev,
    except those of a recovery (the commit of a writable open of a crashed image,
    and of the snapshot cleanup it resumes): they change nothing visible."""
    from bfs_tools.fs.filesystem import Filesystem
    from bfs_tools.store import Store

    orig = Journal.write_entry
    orig_load, orig_finish = Store._load, Filesystem.finish_snapshot_deletion
    recovering = [0]

    def write_entry(self, *, flush=False, roots=None):
        seq = orig(self, flush=flush, roots=roots)
        if flush and not recovering[0] and (self.dev is rec_dev
                                            or getattr(self.dev, "inner", None) is rec_dev):
            log = rec_dev.log
            assert isinstance(log[-1], FlushOp) and isinstance(log[-2], WriteOp)
            out.append(len(log) - 2)
        return seq

    def recovery(fn):
        def wrapped(*a, **kw):
            recovering[0] += 1
            try:
                return fn(*a, **kw)
            finally:
                recovering[0] -= 1
        return wrapped

    Journal.write_entry = write_entry
    Store._load = recovery(orig_load)
    Filesystem.finish_snapshot_deletion = recovery(orig_finish)
    try:
        yield
    finally:
        Journal.write_entry = orig
        Store._load, Filesystem.finish_snapshot_deletion = orig_load, orig_finish


@contextlib.contextmanager
def journal_meter():
    """{"bytes": journal bytes written in the block, "ring": the ring's capacity}."""
    out = {"bytes": 0, "ring": 0}
    orig = Journal.write_entry

    def write_entry(self, *, flush=False, roots=None):
        before = self.bytes_written
        seq = orig(self, flush=flush, roots=roots)
        out["bytes"] += self.bytes_written - before
        out["ring"] = len(self.buckets) * self.bucket_size
        return seq

    Journal.write_entry = write_entry
    try:
        yield out
    finally:
        Journal.write_entry = orig


def model_of(dev: MemoryDevice, *, times: bool = True) -> dict:
    try:
        return capture(dev, times=times)
    except NotBfsError:
        return ABSENT


def record(name: str, base: MemoryDevice, cmds: list[Cmd], *, seed: int = 0,
           before: dict | None = None) -> Recording:
    """Run `cmds` one after the other on a recording device over a copy of `base`."""
    rec_dev = RecordingDevice(base.clone())
    models = [before if before is not None else model_of(base)]
    done: list[Done] = []
    with lib.deterministic(seed):
        for cmd in cmds:
            d = Done(cmd, len(rec_dev.log), 0)
            with _track_commits(rec_dev, d.commits):
                d.rc, d.err = run(cmd, rec_dev)
            d.end = len(rec_dev.log)
            done.append(d)
            # (a command that failed, or copied with warnings like `put -r` over
            # existing names, is all-or-nothing too: its commit points say which)
            models.append(model_of(rec_dev.inner))
    return Recording(name, base, rec_dev.log, done, models)


# ---------------------------------------------------------------------- checking


class CrashFailure(AssertionError):
    pass


@dataclass
class Stats:
    states: int = 0
    reopened: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    outcomes: dict[str, int] = field(default_factory=dict)   # "before"/"after" per command

    def add(self, other: Stats) -> None:
        self.states += other.states
        self.reopened += other.reopened
        for d, o in ((self.kinds, other.kinds), (self.outcomes, other.outcomes)):
            for k, v in o.items():
                d[k] = d.get(k, 0) + v


def check_state(rec: Recording, state: CrashState, dev: MemoryDevice, *,
                reopen: bool) -> int:
    """Check one crash state (module docstring). Returns the model index shown."""
    allowed = rec.allowed(state, dev)
    models = [rec.models[i] for i in allowed]
    if len(allowed) == 2:
        # format in flight: until its superblock is written there is no filesystem
        # (formatting over an old one wipes its superblocks first)
        allowed.append(allowed[0])
        models.append(ABSENT)
    what = (f"workload {rec.name} [{', '.join(d.cmd.name for d in rec.done)}], "
            f"{state.describe()}")
    try:
        got = model_of(dev)
    except BfsError as e:
        raise CrashFailure(f"{what}: the image does not open: {type(e).__name__}: {e}") from e
    if got not in models:
        want = allowed[0]
        near = [i for i, m in enumerate(rec.models) if m == got]
        raise CrashFailure(
            f"{what}: the tree is not the one after {allowed} commands"
            + (f" but the one after {near}" if near else " nor any other model")
            + f": {diff(got, rec.models[want])}")
    shown = allowed[models.index(got)]
    if got is ABSENT or "absent" in got:
        return shown
    try:
        findings = check_n(dev)
    except BfsError as e:
        raise CrashFailure(f"{what}: check -n failed: {type(e).__name__}: {e}") from e
    if findings:
        raise CrashFailure(f"{what}: check -n reports: " + "; ".join(findings[:6]))
    if reopen:
        again = dev.clone()
        try:
            from bfs_tools.fs.filesystem import Filesystem

            Filesystem.open(again, write=True).close()
            got2 = model_of(again)
            findings = check_n(again)
        except BfsError as e:
            raise CrashFailure(f"{what}: writable open: {type(e).__name__}: {e}") from e
        if got2 != got:
            raise CrashFailure(f"{what}: after a writable open and close: {diff(got2, got)}")
        if findings:
            raise CrashFailure(f"{what}: after a writable open, check -n reports: "
                               + "; ".join(findings[:6]))
    return shown


def states_of(rec: Recording, *, seed: int, limits: CrashLimits,
              select=None) -> Iterator[tuple[CrashState, MemoryDevice]]:
    return crash_states(rec.base, rec.log, seed=seed, limits=limits, select=select)


def check_recording(rec: Recording, *, seed: int = 0, limits: CrashLimits = CrashLimits(),
                    select=None, reopen: Callable[[int], bool] | bool = False) -> Stats:
    """Check every crash state of the recording; raise CrashFailure at the first bad one."""
    st = Stats()
    for n, (state, dev) in enumerate(states_of(rec, seed=seed, limits=limits, select=select)):
        ro = reopen(n) if callable(reopen) else reopen
        shown = check_state(rec, state, dev, reopen=ro)
        st.states += 1
        st.reopened += bool(ro)
        st.kinds[state.kind] = st.kinds.get(state.kind, 0) + 1
        key = f"after {shown}"
        st.outcomes[key] = st.outcomes.get(key, 0) + 1
    return st
