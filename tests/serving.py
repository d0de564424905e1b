"""`python -m chatbot serve` in a subprocess on a copy of the FAQ, for the browser and load tests.

The server runs from a temporary folder with relative `corpus` and `index` folders, as a user
would run it (the screenshots show `corpus`), on 127.0.0.1 and a free port.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[1]
FAQ = ROOT / "corpus" / "failed-fusion-faq.txt"
log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_served(url: str, proc: subprocess.Popen, logfile: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}:\n{logfile.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.2)
    pytest.fail(f"server not serving after {timeout} s:\n{logfile.read_text()[-3000:]}")


@contextlib.contextmanager
def served(tmp: Path, *args: str, env: dict[str, str] | None = None,
           timeout: float = 240) -> Iterator[tuple[str, subprocess.Popen]]:
    """Serve a copy of the FAQ with extra `serve` arguments; yields (url, process)."""
    shutil.copytree(FAQ.parent, tmp / "corpus")  # the FAQ and its chatbot.toml
    port, logfile = free_port(), tmp / "server.log"
    t0 = time.monotonic()
    with open(logfile, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "chatbot", "serve", "--port", str(port),
                                 "--corpus", "corpus", "--index", "index", *args],
                                cwd=tmp, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)})
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_served(url, proc, logfile, timeout)
        log.info("page ready %.1f s after process start", time.monotonic() - t0)
        yield url, proc
    finally:
        proc.terminate()
        proc.wait(timeout=20)
