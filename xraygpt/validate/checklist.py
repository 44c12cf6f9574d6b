"""The checklist: one :class:`Check` per line, rendered as text or JSON.

Statuses: ``pass`` (✓), ``fail`` (✗: a required check failed), ``warn`` (!: an
optional check failed) and ``skip`` (–: not applicable, or blocked by an
earlier failure). A run is ready, exit code 0, when no check has ``fail``.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PASS, FAIL, WARN, SKIP = "pass", "fail", "warn", "skip"
SYMBOLS = {PASS: "✓", FAIL: "✗", WARN: "!", SKIP: "–"}
GROUPS = ("config", "datasets", "weights", "hardware", "software")


@dataclass
class Check:
    """One line of the checklist."""

    group: str
    name: str
    status: str
    message: str
    fix: str = ""
    required: bool = True
    details: list[str] = field(default_factory=list)

    @property
    def symbol(self) -> str:
        return SYMBOLS[self.status]


class Checklist:
    """The checks of one validation run, in the order they ran."""

    def __init__(self, cfg_path: str | None = None) -> None:
        self.cfg_path = cfg_path
        self.checks: list[Check] = []
        self.facts: dict[str, Any] = {}  # figures worth printing, e.g. the memory estimate

    def add(
        self,
        group: str,
        name: str,
        ok: bool,
        message: str,
        fix: str = "",
        *,
        required: bool = True,
        details: Iterable[str] = (),
    ) -> Check:
        status = PASS if ok else (FAIL if required else WARN)
        check = Check(group, name, status, message, "" if ok else fix, required, list(details))
        self.checks.append(check)
        return check

    def passed(self, group: str, name: str, message: str, **kw: Any) -> Check:
        return self.add(group, name, True, message, **kw)

    def failed(self, group: str, name: str, message: str, fix: str, **kw: Any) -> Check:
        return self.add(group, name, False, message, fix, **kw)

    def skip(
        self,
        group: str,
        name: str,
        message: str,
        *,
        required: bool = True,
        details: Iterable[str] = (),
    ) -> Check:
        check = Check(group, name, SKIP, message, "", required, list(details))
        self.checks.append(check)
        return check

    def has_failure(self, group: str, prefix: str = "") -> bool:
        return any(
            c.group == group and c.name.startswith(prefix) and c.status == FAIL for c in self.checks
        )

    @property
    def ok(self) -> bool:
        return not any(c.status == FAIL for c in self.checks)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def counts(self) -> dict[str, int]:
        return {status: sum(c.status == status for c in self.checks) for status in SYMBOLS}

    def to_dict(self) -> dict[str, Any]:
        return {
            "cfg_path": self.cfg_path,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "summary": self.counts(),
            "facts": self.facts,
            "checks": [asdict(c) | {"symbol": c.symbol} for c in self.checks],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    def render(self) -> str:
        lines = [f"XrayGPT training set-up check: {self.cfg_path}"]
        for group in GROUPS:
            checks = [c for c in self.checks if c.group == group]
            if not checks:
                continue
            lines.append("")
            lines.append(group)
            for c in checks:
                tag = "" if c.required or c.status in (PASS, SKIP) else " (optional)"
                lines.append(f"  {c.symbol} {c.name}{tag}: {c.message}")
                lines.extend(f"      {d}" for d in c.details)
                if c.fix:
                    lines.append(f"      fix: {c.fix}")
        n = self.counts()
        verdict = "READY" if self.ok else "NOT READY"
        lines.append("")
        lines.append(
            f"{n[PASS]} passed, {n[FAIL]} failed, {n[WARN]} warning(s), {n[SKIP]} skipped"
            f" -> {verdict} (exit {self.exit_code})"
        )
        return "\n".join(lines)


def closest(name: str, known: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` when a registered name is close to a misspelt one."""
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def human_count(n: int) -> str:
    """Parameter counts as people write them: 985.9M, 3.15M, 41.2k."""
    if n >= 1e9:
        return f"{n / 1e9:.2f}B"
    if n >= 1e6:
        return f"{n / 1e6:.2f}M" if n < 1e7 else f"{n / 1e6:.1f}M"
    if n >= 1e3:
        return f"{n / 1e3:.1f}k"
    return str(n)


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    if abs(n) < 1024:
        return f"{int(n)} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if abs(n) < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} TiB"


def read_json(path: Path) -> tuple[Any, str | None]:
    """``(data, None)``, or ``(None, error)`` with the line and column of a syntax error."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        return None, f"cannot read {path}: {err}"
    try:
        return json.loads(text), None
    except json.JSONDecodeError as err:
        return None, f"{path} is not valid JSON (line {err.lineno}, column {err.colno}: {err.msg})"
