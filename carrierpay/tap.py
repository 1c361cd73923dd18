"""Run a pgTAP file with psql and judge its TAP output."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

_PLAN = re.compile(r"^1\.\.(\d+)\s*$")
_RESULT = re.compile(r"^(not )?ok (\d+)")


@dataclass
class TapReport:
    planned: int | None = None
    passed: int = 0
    failed: list[str] = field(default_factory=list)
    output: str = ""
    error: str = ""

    @property
    def ok(self) -> bool:
        ran = self.passed + len(self.failed)
        return not self.error and not self.failed and self.planned is not None and ran == self.planned

    def summary(self) -> str:
        ran = self.passed + len(self.failed)
        parts = [f"planned {self.planned}, ran {ran}, failed {len(self.failed)}"]
        if self.error:
            parts.append(f"psql error: {self.error}")
        return "; ".join(parts)


def parse_tap(output: str) -> TapReport:
    report = TapReport(output=output)
    for line in output.splitlines():
        line = line.strip()
        if plan := _PLAN.match(line):
            report.planned = int(plan.group(1))
        elif result := _RESULT.match(line):
            if result.group(1) and "# TODO" not in line:
                report.failed.append(line)
            else:
                report.passed += 1
    return report


def run_tap_file(url: str, path: Path) -> TapReport:
    proc = subprocess.run(
        ["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-f", str(path), url],
        capture_output=True,
        text=True,
        check=False,
    )
    report = parse_tap(proc.stdout)
    if proc.returncode != 0:
        report.error = proc.stderr.strip() or f"psql exited {proc.returncode}"
    return report
