"""Fully offline: `ask` and `serve` work in a network namespace that has only a loopback device.

`unshare -rn` (a user and a network namespace; works as root and, where user namespaces are
allowed, as anyone) cuts the process off from every network but its own 127.0.0.1. A driver
script inside it first proves that the outside is unreachable, then runs `ask` (the default
generator: the packaged embedder and LLM load from disk) and starts `serve`, waits until its page
answers on 127.0.0.1, and stops it.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

DRIVER = r'''
import json, signal, socket, subprocess, sys, time, urllib.request

out = {}
for what, probe in (("connect", lambda: socket.create_connection(("1.1.1.1", 443), timeout=5)),
                    ("dns", lambda: socket.getaddrinfo("pypi.org", 443))):
    try:
        probe()
        out[what] = "reachable"
    except OSError as err:
        out[what] = f"blocked ({err})"

chatbot = [sys.executable, "-m", "chatbot"]
ask = subprocess.run([*chatbot, "ask", "--json", "Can your spine curve after fusion?"],
                     capture_output=True, text=True, timeout=400)
out["ask"] = {"rc": ask.returncode, "stdout": ask.stdout, "stderr": ask.stderr[-3000:]}

serve = subprocess.Popen([*chatbot, "serve", "--port", "7860", "--generator", "extractive"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
deadline, page = time.monotonic() + 400, None
while page is None and serve.poll() is None and time.monotonic() < deadline:
    try:
        with urllib.request.urlopen("http://127.0.0.1:7860/", timeout=5) as response:
            body = response.read(20000).decode("utf-8", "replace")
            page = {"status": response.status, "body": body}
    except OSError:
        time.sleep(1)
out["serve_page"] = page
serve.send_signal(signal.SIGINT)
try:
    serve.wait(timeout=30)
except subprocess.TimeoutExpired:
    serve.kill()
out["serve_stderr"] = serve.stderr.read()[-3000:]
print(json.dumps(out))
'''


def test_ask_and_serve_work_with_the_network_cut_off(tmp_path):
    shutil.copytree(ROOT / "corpus", tmp_path / "corpus")
    (tmp_path / "driver.py").write_text(DRIVER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATBOT_")}
    env.update(PYTHONPATH=str(ROOT), GRADIO_ANALYTICS_ENABLED="True")  # it must cope, not be told
    command = f"ip link set lo up && {sys.executable} driver.py"
    run = subprocess.run(["unshare", "-rn", "sh", "-c", command], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.splitlines()[-1])
    assert out["connect"].startswith("blocked") and out["dns"].startswith("blocked"), out

    assert out["ask"]["rc"] == 0, out["ask"]["stderr"]
    answer = json.loads(out["ask"]["stdout"])
    assert not answer["refused"] and "curve" in answer["citations"][0]["text"]
    assert "Traceback" not in out["ask"]["stderr"]

    assert out["serve_page"] is not None, out["serve_stderr"]
    assert out["serve_page"]["status"] == 200 and "gradio" in out["serve_page"]["body"].lower()
    assert "Traceback" not in out["serve_stderr"]
