"""The state of one `bfs check` run: mode, findings, repair decisions.

Modes (e2fsck conventions):
  no      -n: change nothing (the image is opened read-only; journal replay
          happens in memory only)
  yes     -y: repair everything repairable
  preen   -p: repair what the catalogue marks "safe"; anything else is left and
          makes the exit code 4
  ask     interactive: ask per finding (y)es, (n)o, (a)ll, (q)uit

Every finding carries a stable error id from formats/fsck_errors.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..formats.fsck_errors import BY_NAME, FsckError


class Cancelled(Exception):
    """The user answered q(uit)."""


class Finding:
    # (plain classes, not dataclasses: each dataclass costs ~0.7 ms of every start-up)

    def __init__(self, pass_name: str, error: FsckError, location: str, message: str,
                 fixed: bool = False, path: str | None = None):
        self.pass_name = pass_name
        self.error = error
        self.location = location
        self.message = message
        self.fixed = fixed
        self.path = path

    def __repr__(self) -> str:
        return (f"Finding({self.pass_name!r}, {self.error.name}, {self.location!r}, "
                f"{self.message!r}, fixed={self.fixed})")

    def as_dict(self) -> dict:
        out = {"pass": self.pass_name, "id": self.error.id, "error": self.error.name,
               "severity": self.error.severity, "location": self.location,
               "message": self.message, "repairable": self.error.repairable,
               "fixed": self.fixed}
        if self.path:
            out["path"] = self.path
        return out


class CheckContext:
    def __init__(self, store, mode: str, verify_data: bool = False, verbose: bool = False,
                 ask: Callable[[Finding], str] | None = None,
                 on_finding: Callable[[Finding], None] | None = None):
        self.store = store
        self.mode = mode                         # "no", "yes", "preen", "ask"
        self.verify_data = verify_data
        self.verbose = verbose
        self.ask = ask                           # interactive answer: y/n/a/q
        self.on_finding = on_finding
        self.findings: list[Finding] = []
        self.pass_name = ""
        self.yes_to_all = False
        self.state: dict = {}                    # data shared between passes
        self.started = time.monotonic()
        self.timings: dict[str, float] = {}

    @property
    def writable(self) -> bool:
        return self.mode != "no"

    def report(self, name: str, location: str, message: str, *, path: str | None = None,
               can_fix: bool = True) -> bool:
        """Record a finding; return True if the caller should repair it now."""
        err = BY_NAME[name]
        f = Finding(self.pass_name, err, location, message, path=path)
        decision = can_fix and err.repairable and self._decide(f)
        f.fixed = decision
        self.findings.append(f)
        if self.on_finding is not None:
            self.on_finding(f)
        return decision

    def act(self, name: str, location: str, message: str, *, path: str | None = None,
            can_fix: bool = True) -> bool:
        """report(), and True if the caller should make the repair now: it was
        decided, or this is -n, where repairs made through a Batch only change
        the tree in memory, so later passes judge what -y would leave."""
        fixed = self.report(name, location, message, path=path, can_fix=can_fix)
        return fixed or (self.mode == "no" and can_fix and BY_NAME[name].repairable)

    def _decide(self, f: Finding) -> bool:
        if self.mode == "no":
            return False
        if self.mode == "yes" or self.yes_to_all:
            return True
        if self.mode == "preen":
            return f.error.repair == "safe"
        answer = (self.ask(f) if self.ask else "n").lower()
        if answer == "q":
            raise Cancelled()
        if answer == "a":
            self.yes_to_all = True
            return True
        return answer == "y"

    def unfix_last(self, note: str = "") -> None:
        """The repair of the last finding failed: record it as not fixed."""
        if self.findings:
            self.findings[-1].fixed = False
            if note:
                self.findings[-1].message += f" ({note})"

    # summaries

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.error.severity == "error"]

    @property
    def unfixed(self) -> list[Finding]:
        return [f for f in self.findings if not f.fixed and f.error.severity == "error"]

    @property
    def fixed(self) -> list[Finding]:
        return [f for f in self.findings if f.fixed]

    def exit_code(self) -> int:
        code = 0
        if self.fixed:
            code |= 1
        if self.unfixed:
            code |= 4
        return code
