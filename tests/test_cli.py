"""The command line as a user runs it: a real subprocess, real models, a temporary index."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args, cwd):
    return subprocess.run([sys.executable, "-m", "chatbot", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_help_lists_the_commands(tmp_path):
    out = run("--help", cwd=tmp_path)
    assert out.returncode == 0
    for command in ("ingest", "ask", "chat", "serve", "eval"):
        assert command in out.stdout


def test_missing_corpus_is_a_clear_error(tmp_path):
    out = run("ingest", "--corpus", "nope", "--index", "idx", cwd=tmp_path)
    assert out.returncode == 2
    assert "nope" in out.stderr and "does not exist" in out.stderr


@pytest.mark.slow
def test_ask_json_builds_the_index_then_answers_with_citations(tmp_path):
    shutil.copytree(ROOT / "corpus", tmp_path / "corpus")
    out = run("ask", "--json", "--generator", "extractive", "Can your spine curve after fusion?", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    answer = json.loads(out.stdout)
    assert not answer["refused"] and answer["citations"]
    assert "curve" in answer["citations"][0]["text"]
    assert (tmp_path / "index" / "manifest.json").exists()
    # A changed corpus is noticed and the index rebuilt, with the reason said.
    (tmp_path / "corpus" / "extra.md").write_text("# Smoking\n\nSmoking slows bone healing after fusion.\n")
    out = run("ask", "--generator", "extractive", "Does smoking slow bone healing?", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "added: extra.md" in out.stderr
    assert "[1]" in out.stdout and "extra.md" in out.stdout


@pytest.mark.slow
def test_an_index_of_another_corpus_is_never_overwritten(tmp_path):
    shutil.copytree(ROOT / "corpus", tmp_path / "faq")
    assert run("ingest", "--corpus", "faq", "--index", "idx", cwd=tmp_path).returncode == 0
    manifest = (tmp_path / "idx" / "manifest.json").read_bytes()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.txt").write_text("Another corpus entirely.\n")
    out = run("ask", "--corpus", "other", "--index", "idx", "--generator", "extractive", "Hello?", cwd=tmp_path)
    assert out.returncode == 2
    assert "holds the index of" in out.stderr and "faq" in out.stderr
    assert (tmp_path / "idx" / "manifest.json").read_bytes() == manifest


@pytest.mark.slow
def test_chat_answers_a_follow_up_in_context(tmp_path):
    shutil.copytree(ROOT / "corpus", tmp_path / "corpus")
    out = subprocess.run([sys.executable, "-m", "chatbot", "chat", "--generator", "extractive"],
                         input="What are pedicle screws used for?\nCan they come loose?\n\n", cwd=tmp_path,
                         capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    second = out.stdout.split("> ")[2]
    assert "loosen" in second and "[1]" in second
