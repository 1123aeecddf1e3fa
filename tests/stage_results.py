"""Assertions on a finished stage process, shared by the stage tests: success, or the one-line user error."""

from __future__ import annotations

import subprocess


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def fails_with(result: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit status 2 and a last `error: ` line on stderr containing every fragment."""
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    line = [ln for ln in result.stderr.splitlines() if ln.startswith("error: ")]
    assert line, result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in line[-1], line[-1]
