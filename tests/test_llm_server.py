"""The OpenAI-compatible generator against a real server: `python -m chatbot llm-server` (the
packaged Qwen GGUF through llama.cpp's HTTP server) in a subprocess, then a dead server, one that
answers HTTP 500 and one that never answers. The answer never depends on the model being up."""
from __future__ import annotations

import http.server
import os
import subprocess
import sys
import threading
import time

import pytest
from serving import ROOT, _wait_until_served, free_port

from chatbot.answer import Code
from chatbot.answerability import Coverage
from chatbot.pipeline import Chatbot

pytestmark = pytest.mark.slow
QUESTION = "What do pedicle screws do?"


@pytest.fixture(scope="module")
def llm_url(tmp_path_factory):
    port, logfile = free_port(), tmp_path_factory.mktemp("llm") / "llm-server.log"
    with open(logfile, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "chatbot", "llm-server", "--port", str(port)],
                                stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        _wait_until_served(f"http://127.0.0.1:{port}/health", proc, logfile, timeout=120)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) == 0  # SIGTERM is a clean stop


def _bot(settings, faq_index, embedder, url: str, **changes) -> Chatbot:
    return Chatbot(settings.replace(generator="openai", openai_base_url=url, **changes),
                   index=faq_index, embedder=embedder)


def test_answers_through_a_real_openai_compatible_server(settings, faq_index, embedder, llm_url):
    events = list(_bot(settings, faq_index, embedder, llm_url).stream(QUESTION))
    answer = events[-1]
    assert answer.outcome.code is Code.ANSWERED and "no draft" not in answer.note
    assert answer.citations and "splint" in answer.text
    if answer.wording == "model":  # checked sentences streamed over HTTP, then the answer
        assert "".join(events[:-1]) == answer.text
    lay = "can the metalwork actually snap??"  # a second reading, asked over HTTP too
    rewritten = _bot(settings, faq_index, embedder, llm_url).generator.rewrite(lay)
    assert rewritten and rewritten != lay and "\n" not in rewritten


class _Failing(http.server.BaseHTTPRequestHandler):
    delay = 0.0

    def do_POST(self):
        time.sleep(self.delay)
        self.send_response(500)
        self.end_headers()
        self.wfile.write(b"boom")

    def log_message(self, *args):
        pass


@pytest.fixture
def failing_server():
    servers = []

    def start(delay: float) -> str:
        handler = type("Handler", (_Failing,), {"delay": delay})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/v1"

    yield start
    for server in servers:
        server.shutdown()


@pytest.mark.parametrize("case, why", [("dead", "cannot reach"), ("500", "HTTP 500"),
                                       ("slow", "did not answer within 1 s")])
def test_a_failing_server_still_gets_the_checked_quotes(settings, faq_index, embedder,
                                                         failing_server, case, why):
    url = {"dead": f"http://127.0.0.1:{free_port()}/v1", "500": failing_server(0.0),
           "slow": failing_server(5.0)}[case]
    bot = _bot(settings, faq_index, embedder, url, openai_timeout_s=1.0)
    assert bot.generator.rewrite("can the metalwork actually snap??") is None  # no second reading
    answer = bot.answer(QUESTION)
    assert answer.coverage is Coverage.FULL and not answer.refused
    assert answer.wording == "quotes" and why in answer.note
    assert answer.citations and "splint" in answer.text
