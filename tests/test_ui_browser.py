"""The web chat end to end: `python -m chatbot serve` in a subprocess, driven by Debian's Chromium.

No skipping: CI installs /usr/bin/chromium, so a missing browser is a failure, not a pass.
Timings and memory are logged (run with `-o log_cli=true --log-cli-level=INFO` to see them).
"""
from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

from chatbot.ui import DRAFT_LABEL

pytestmark = pytest.mark.slow
log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
FAQ = ROOT / "corpus" / "failed-fusion-faq.txt"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
BOT = "#chat [data-testid='bot']"
DRAFTING = DRAFT_LABEL.strip("*")

# Resolves once the newest bot message shows model text beyond the "Drafting" label (or the
# final answer already), i.e. the first streamed token reached the page.
FIRST_TOKEN_JS = """([selector, before, label]) => {
  const msgs = document.querySelectorAll(selector);
  if (msgs.length <= before) return false;
  const text = msgs[msgs.length - 1].innerText.trim();
  return !text.startsWith(label) || text.length > label.length + 1;
}"""
# Resolves once the checked answer replaced the draft and the sources panel is for this question.
FINAL_JS = """([selector, before, label, question]) => {
  const msgs = document.querySelectorAll(selector);
  if (msgs.length <= before) return false;
  const query = document.querySelector('#sources .query');
  return !msgs[msgs.length - 1].innerText.trim().startsWith(label)
      && query !== null && query.innerText.includes(question);
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_until_served(url: str, proc: subprocess.Popen, logfile: Path, timeout: float = 240) -> None:
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


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The real CLI entry point on a copy of the FAQ; yields its URL."""
    tmp = tmp_path_factory.mktemp("serve")
    (tmp / "corpus").mkdir()
    shutil.copy(FAQ, tmp / "corpus" / FAQ.name)
    port, logfile = free_port(), tmp / "server.log"
    t0 = time.monotonic()
    with open(logfile, "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "chatbot", "serve", "--port", str(port),
                                 "--corpus", str(tmp / "corpus"), "--index", str(tmp / "index")],
                                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_served(url, proc, logfile)
        log.info("page ready %.1f s after process start", time.monotonic() - t0)
        yield url, proc
        log.info("server RSS %.0f MB", psutil.Process(proc.pid).memory_info().rss / 1e6)
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert CHROMIUM.exists(), "Debian's Chromium is missing: apt-get install -y chromium"
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(server, browser):
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(server[0])
    page.wait_for_selector("#question textarea")
    yield page
    page.close()


# Records whether an unchecked draft with model text was ever on screen (streaming is visible).
WATCH_DRAFTS_JS = """([selector, label]) => {
  window.sawDraft = false;
  new MutationObserver(() => {
    const msgs = document.querySelectorAll(selector);
    const text = msgs.length ? msgs[msgs.length - 1].innerText.trim() : "";
    if (text.startsWith(label) && text.length > label.length + 1) window.sawDraft = true;
  }).observe(document.querySelector('#chat'), {subtree: true, childList: true, characterData: true});
}"""


def ask(page, question: str) -> tuple[float, float]:
    """Type, press Enter, wait for the answer; (seconds to first streamed token, to full answer)."""
    before = page.locator(BOT).count()
    page.evaluate(WATCH_DRAFTS_JS, [BOT, DRAFTING])
    page.fill("#question textarea", question)
    t0 = time.monotonic()
    page.press("#question textarea", "Enter")
    page.wait_for_function(FIRST_TOKEN_JS, arg=[BOT, before, DRAFTING], polling=50, timeout=120_000)
    first = time.monotonic() - t0
    page.wait_for_function(FINAL_JS, arg=[BOT, before, DRAFTING, question], polling=50, timeout=120_000)
    total = time.monotonic() - t0
    log.info("%r: first token %.2f s, full answer %.2f s in the browser", question, first, total)
    return first, total


def test_answer_with_sources_and_follow_up(page, tmp_path):
    assert "not medical advice" in page.locator("#disclaimer").inner_text()
    ask(page, "What do pedicle screws do?")
    assert page.evaluate("window.sawDraft"), "the draft was never streamed to the page"
    assert DRAFTING not in page.locator(BOT).last.inner_text()  # ...and the checked answer replaced it
    assert "[1]" in page.locator(BOT).last.inner_text()
    first = page.locator("#sources .citation").first
    assert "[1]" in first.locator(".cite-head").inner_text()
    assert FAQ.name in first.inner_text()
    assert first.locator("mark").first.inner_text().strip()  # the cited span is highlighted
    assert "splint" in page.locator("#sources").inner_text()
    page.screenshot(path=tmp_path / "answer.png")

    ask(page, "Can they come loose?")
    assert page.locator(BOT).count() == 2
    assert "pedicle screws" in page.locator("#sources .query").inner_text()  # standalone query shown
    assert "loosen" in page.locator("#sources .citation mark").first.inner_text()
    page.screenshot(path=tmp_path / "follow-up.png")
    log.info("screenshots in %s", tmp_path)


def test_refusal_then_new_conversation(page):
    ask(page, "What is the capital of Australia?")
    refusal = page.locator("#sources .refusal")
    assert "Not covered by the documents" in refusal.inner_text()
    assert FAQ.name in refusal.inner_text()  # where it looked
    assert "do not cover this" in page.locator(BOT).last.locator("blockquote").inner_text()

    page.get_by_role("button", name="New conversation").click()
    page.wait_for_selector("#sources .panel-empty")
    assert page.locator(BOT).count() == 0


def test_stop_discards_the_unchecked_draft(page):
    page.fill("#question textarea", "What can be done if a spinal fusion failed?")
    page.press("#question textarea", "Enter")
    page.wait_for_function(FIRST_TOKEN_JS, arg=[BOT, 0, DRAFTING], polling=20, timeout=120_000)
    page.get_by_role("button", name="Stop").click()
    page.wait_for_function(f"() => document.querySelector({BOT!r}).innerText.includes('Stopped')")
    assert DRAFTING not in page.locator(BOT).last.inner_text()
    ask(page, "What do pedicle screws do?")  # the queue is free again
    assert "[1]" in page.locator(BOT).last.inner_text()


def test_uploaded_document_is_searchable_without_restart(page, tmp_path):
    doc = tmp_path / "stimulators.md"
    doc.write_text("# Bone growth stimulators\n\nA bone growth stimulator sends a weak electrical current "
                   "to the fusion site to help the bone heal after spinal fusion surgery.\n")
    page.get_by_text("Add documents").click()
    page.set_input_files("#upload input[type=file]", str(doc))
    report = "() => document.querySelector('#upload-report').innerText.includes('searchable now')"
    page.wait_for_function(report, timeout=120_000)
    ask(page, "What does a bone growth stimulator do?")
    assert "stimulators.md" in page.locator("#sources .citation").first.inner_text()
