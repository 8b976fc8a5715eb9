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
from dataclasses import dataclass, field

from ..formats.fsck_errors import BY_NAME, FsckError


class Cancelled(Exception):
    """The user answered q(uit)."""


@dataclass
class Finding:
    pass_name: str
    error: FsckError
    location: str
    message: str
    fixed: bool = False
    path: str | None = None

    def as_dict(self) -> dict:
        out = {"pass": self.pass_name, "id": self.error.id, "error": self.error.name,
               "severity": self.error.severity, "location": self.location,
               "message": self.message, "repairable": self.error.repairable,
               "fixed": self.fixed}
        if self.path:
            out["path"] = self.path
        return out


@dataclass
class CheckContext:
    store: object
    mode: str                                   # "no", "yes", "preen", "ask"
    verify_data: bool = False
    verbose: bool = False
    ask: Callable[[Finding], str] | None = None  # interactive answer: y/n/a/q
    on_finding: Callable[[Finding], None] | None = None
    findings: list[Finding] = field(default_factory=list)
    pass_name: str = ""
    yes_to_all: bool = False
    state: dict = field(default_factory=dict)   # data shared between passes
    started: float = field(default_factory=time.monotonic)
    timings: dict[str, float] = field(default_factory=dict)

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
