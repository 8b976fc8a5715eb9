"""Rendering check results: one line per finding, a summary, or JSON.

JSON schema (stable; "version" changes if it does):
{
  "version": 1,
  "image": str, "mode": "no"|"yes"|"preen"|"ask",
  "findings": [{"pass": str, "id": int, "error": str, "severity": "error"|"warning",
                "location": str, "message": str, "repairable": bool, "fixed": bool,
                "path": str (optional)}],
  "summary": {"errors": int, "warnings": int, "fixed": int, "unfixed": int,
              "seconds": float, "passes": {name: seconds}},
  "exit_code": int
}
"""

from __future__ import annotations

import time

from .context import CheckContext, Finding


def finding_line(f: Finding) -> str:
    state = "fixed" if f.fixed else ("not fixed" if f.error.repairable else "cannot fix")
    where = f.location + (f" ({f.path})" if f.path else "")
    return f"{f.pass_name}: {f.error.name}: {where}: {f.message} [{state}]"


def summary_line(ctx: CheckContext, image: str) -> str:
    errs = len(ctx.errors)
    warns = len(ctx.findings) - errs
    secs = time.monotonic() - ctx.started
    if not ctx.findings:
        return f"{image}: clean ({secs:.2f} s)"
    parts = [f"{errs} error{'s' if errs != 1 else ''}"]
    if warns:
        parts.append(f"{warns} warning{'s' if warns != 1 else ''}")
    parts.append(f"{len(ctx.fixed)} fixed")
    if ctx.unfixed:
        parts.append(f"{len(ctx.unfixed)} left")
    return f"{image}: {', '.join(parts)} ({secs:.2f} s)"


def as_json(ctx: CheckContext, image: str, code: int) -> dict:
    return {
        "version": 1,
        "image": image,
        "mode": ctx.mode,
        "findings": [f.as_dict() for f in ctx.findings],
        "summary": {"errors": len(ctx.errors), "warnings": len(ctx.findings) - len(ctx.errors),
                    "fixed": len(ctx.fixed), "unfixed": len(ctx.unfixed),
                    "seconds": round(time.monotonic() - ctx.started, 3),
                    "passes": {k: round(v, 4) for k, v in ctx.timings.items()}},
        "exit_code": code,
    }
