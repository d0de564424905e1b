"""Run Python in a fresh process: for checks that the test process itself would spoil (modules
already imported, threads already running)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def last_line(code: str, timeout: float = 300) -> str:
    """Run `code` from the repository root; the last line it printed (it must succeed)."""
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=timeout, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout.strip().splitlines()[-1]
