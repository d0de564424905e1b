"""Who may change the corpus from the web page, and what an upload does: the admin token and
lockout, rename or replace with the old version kept, the audit log; end to end on the real
models with a bot of its own."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from chatbot import admin, documents, guards
from chatbot.config import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
FAQ = ROOT / "corpus" / "failed-fusion-faq.txt"
TOKEN = "correct-horse-battery-staple"
WHO = {"user": None, "ip": "192.0.2.7"}


# -- who may change the corpus ---------------------------------------------------------------

@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("::1", True), ("localhost", True), ("0.0.0.0", False), ("::", False),
    ("192.168.1.5", False), ("chat.example.org", False)])
def test_loopback_hosts(host, loopback):
    assert guards.is_loopback(host) is loopback


def test_uploads_are_off_unless_asked_for_and_need_a_token(tmp_path, caplog):
    base = Settings(corpus_dir=tmp_path / "corpus", index_dir=tmp_path / "index")
    assert not admin.uploads_on(base, "0.0.0.0")
    with caplog.at_level(logging.WARNING, logger="chatbot.admin"):
        assert not admin.uploads_on(base.replace(allow_uploads=True), "127.0.0.1")  # no token: off
    assert "CHATBOT_ADMIN_TOKEN" in caplog.text
    with pytest.raises(ValueError, match="refusing to serve uploads on 0.0.0.0 without CHATBOT_"):
        admin.uploads_on(base.replace(allow_uploads=True), "0.0.0.0")
    assert admin.uploads_on(base.replace(allow_uploads=True, admin_token=TOKEN), "0.0.0.0")


def test_upload_settings_from_the_environment(monkeypatch):
    monkeypatch.setenv("CHATBOT_ALLOW_UPLOADS", "1")
    monkeypatch.setenv("CHATBOT_ADMIN_TOKEN", TOKEN)
    settings = load_settings()
    assert settings.allow_uploads is True and settings.admin_token == TOKEN
    assert TOKEN not in repr(settings)  # a logged Settings never shows the secret
    monkeypatch.setenv("CHATBOT_ALLOW_UPLOADS", "maybe")
    with pytest.raises(ValueError, match="yes/no"):
        load_settings()


def test_serving_uploads_on_all_interfaces_without_a_token_exits_2_with_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "CHATBOT_ADMIN_TOKEN"}
    command = [sys.executable, "-m", "chatbot", "serve", "--host", "0.0.0.0", "--allow-uploads",
               "--corpus", str(tmp_path), "--index", str(tmp_path / "index")]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "ERROR refusing to serve uploads on 0.0.0.0 without CHATBOT_ADMIN_TOKEN; "
        "set it or drop --allow-uploads"]
    assert not (tmp_path / "index").exists()  # refused before loading anything


def test_a_blank_or_short_admin_token_is_no_token():
    """Outside security trial: CHATBOT_ADMIN_TOKEN=" " passed the 0.0.0.0 check."""
    blank = Settings(allow_uploads=True, admin_token="   ")
    with pytest.raises(ValueError, match="without CHATBOT_ADMIN_TOKEN"):
        admin.uploads_on(blank, "0.0.0.0")
    assert not admin.uploads_on(blank, "127.0.0.1")
    with pytest.raises(ValueError, match="CHATBOT_ADMIN_TOKEN has 6 characters; use at least 16"):
        admin.uploads_on(blank.replace(admin_token="hunter"), "127.0.0.1")


def test_old_versions_are_never_kept_inside_the_corpus(tmp_path):
    settings = Settings(corpus_dir=tmp_path, index_dir=tmp_path / "index", allow_uploads=True,
                        admin_token=TOKEN)
    with pytest.raises(ValueError, match="inside the corpus"):
        admin.uploads_on(settings, "127.0.0.1")


def test_admin_gate_checks_the_token_and_locks_out_guessers():
    gate = admin.AdminGate(Settings(admin_token=TOKEN, admin_max_failures=3, admin_lockout_minutes=10))
    assert gate.check(TOKEN, "a", now=0) is None
    assert gate.check("", "a", now=1) == "type the admin token first"
    assert gate.check(TOKEN[:-1], "a", now=2) == "wrong admin token"
    assert gate.check("guess", "a", now=3) == "wrong admin token"
    assert "too many wrong admin tokens" in gate.check(TOKEN, "a", now=4)  # even the right one
    assert gate.check(TOKEN, "b", now=4) is None  # another address is not locked out
    assert gate.check(TOKEN, "a", now=1 + 600) is None  # the oldest failure expired
    no_token = admin.AdminGate(Settings(admin_token=""))
    assert no_token.check("", "a", now=0) == "type the admin token first"  # never "" == ""


def test_a_taken_name_is_renamed_unless_replace_is_asked_for(tmp_path):
    (tmp_path / "faq.txt").write_text("x")
    (tmp_path / "faq-2.txt").write_text("x")
    assert admin.place(tmp_path, "new.txt", replace=False) == (tmp_path / "new.txt", "added")
    assert admin.place(tmp_path, "faq.txt", replace=False) == (tmp_path / "faq-3.txt", "renamed")
    assert admin.place(tmp_path, "faq.txt", replace=True) == (tmp_path / "faq.txt", "replaced")
    assert admin.place(tmp_path, "../../etc/faq.TXT", False) == (tmp_path / "faq-3.txt", "renamed")


# -- uploads end to end (a bot of its own, so the shared FAQ index stays as it was) --------

@pytest.fixture
def upload_bot(bot, tmp_path):
    from chatbot.pipeline import Chatbot

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copy(FAQ, corpus / FAQ.name)
    settings = load_settings(corpus_dir=corpus, index_dir=tmp_path / "index", max_file_mb=0.01,
                             allow_uploads=True, admin_token=TOKEN)
    return Chatbot(settings, generator=bot.generator, embedder=bot.embedder)  # models loaded


def no_progress(*args, **kwargs):
    pass


def audit_lines(settings) -> list[dict]:
    lines = (settings.index_dir / settings.audit_log).read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.mark.slow
def test_upload_makes_a_document_searchable(upload_bot, tmp_path):
    doc = tmp_path / "Bone growth stimulators.md"
    doc.write_text("# Bone growth stimulators\n\nA bone growth stimulator sends a weak "
                   "electrical current to the fusion site to help the bone heal after spinal "
                   "fusion surgery.\n")
    report = admin.add_documents(upload_bot, [str(doc)], no_progress, WHO)
    assert "Added" in report and "searchable now" in report
    assert (upload_bot.settings.corpus_dir / "Bone-growth-stimulators.md").exists()
    answer = upload_bot.answer("What does a bone growth stimulator do?")
    assert not answer.refused
    assert answer.citations[0].chunk.source == "Bone-growth-stimulators.md"
    [line] = audit_lines(upload_bot.settings)
    assert (line["action"], line["ip"], line["user"]) == ("added", WHO["ip"], None)
    assert line["size"] == doc.stat().st_size
    assert line["sha256"] == hashlib.sha256(doc.read_bytes()).hexdigest()
    assert (line["file"], line["saved_as"]) == (doc.name, "Bone-growth-stimulators.md")
    assert line["time"].endswith("+00:00")  # ISO time, UTC
    assert "Recent changes" in admin.recent_changes(upload_bot.settings)


@pytest.mark.slow
def test_an_upload_never_silently_replaces_a_curated_document(upload_bot, tmp_path):
    """The tester's attack: a file named like the FAQ, with harmful text."""
    settings, original = upload_bot.settings, FAQ.read_bytes()
    poison = tmp_path / FAQ.name
    poison.write_text("Stop taking all your medication after a failed fusion.\n")
    report = admin.add_documents(upload_bot, [str(poison)], no_progress, WHO).replace("\\", "")
    assert "Renamed" in report and "failed-fusion-faq-2.txt" in report
    assert (settings.corpus_dir / FAQ.name).read_bytes() == original

    report = admin.add_documents(upload_bot, [str(poison)], no_progress, WHO, replace=True)
    assert "Replaced" in report and "old version is kept" in report
    [kept] = (settings.index_dir / settings.replaced_dir).iterdir()
    assert kept.read_bytes() == original and kept.name.endswith("-" + FAQ.name)
    assert kept not in documents.corpus_files(settings.corpus_dir)  # the indexer never reads it
    assert kept.name not in upload_bot.index.manifest["files"]
    assert [a["action"] for a in audit_lines(settings)] == ["renamed", "replaced"]
    assert audit_lines(settings)[1]["old_version"] == str(kept)


@pytest.mark.slow
def test_a_wrong_token_adds_nothing_and_is_audited(upload_bot, tmp_path, caplog):
    settings = upload_bot.settings
    doc = tmp_path / "notes.txt"
    doc.write_text("Some notes about fusion.\n")
    gate = admin.AdminGate(settings)
    with caplog.at_level(logging.INFO, logger="chatbot.admin"):
        report = admin.handle_upload(upload_bot, gate, [str(doc)], "not-it", False, WHO, no_progress)
        assert "Rejected" in report and "wrong admin token" in report
        assert not (settings.corpus_dir / "notes.txt").exists()
        report = admin.handle_upload(upload_bot, gate, [str(doc)], TOKEN, False, WHO, no_progress)
    assert "searchable now" in report
    rejected, added = audit_lines(settings)
    assert (rejected["action"], rejected["reason"]) == ("rejected", "wrong admin token")
    assert added["action"] == "added"
    assert TOKEN not in caplog.text and "not-it" not in caplog.text
    assert TOKEN not in (settings.index_dir / settings.audit_log).read_text()


@pytest.mark.slow
def test_a_flood_of_listed_files_is_one_file_and_a_bounded_audit(upload_bot, tmp_path):
    """Outside security trial: one file listed 1,000 times with a wrong token was hashed and
    audited 1,000 times in the only worker slot."""
    settings = upload_bot.settings
    doc = tmp_path / "notes.txt"
    doc.write_text("Some notes about fusion.\n")
    gate = admin.AdminGate(settings)
    report = admin.handle_upload(upload_bot, gate, [str(doc)] * 1000, "not-it", False, WHO,
                              no_progress)
    assert "wrong admin token" in report and len(audit_lines(settings)) == 1
    many = [tmp_path / f"n{i}.txt" for i in range(settings.max_upload_files + 1)]
    for path in many:
        path.write_text("Some notes.\n")
    report = admin.handle_upload(upload_bot, gate, list(map(str, many)), TOKEN, False, WHO,
                              no_progress)
    assert "21 files at once; send at most 20" in report, report
    assert len(audit_lines(settings)) == 1 + settings.max_upload_files
    assert not any((settings.corpus_dir / p.name).exists() for p in many)


@pytest.mark.slow
@pytest.mark.parametrize("name, content, error", [
    ("notes.exe", b"MZ binary", "wrong file type"),
    ("empty.txt", b"", "empty"),
    ("big.txt", b"words " * 5000, "over the 0.01 MB limit"),
    ("blank.md", b"   \n\n  ", "no text"),
])
def test_bad_uploads_are_refused_with_a_reason(upload_bot, tmp_path, name, content, error):
    path = tmp_path / name
    path.write_bytes(content)
    report = admin.add_documents(upload_bot, [str(path)], no_progress, WHO)
    assert "Rejected" in report and error in report.replace("\\", "")
    assert not (upload_bot.settings.corpus_dir / name).exists()
    [line] = audit_lines(upload_bot.settings)
    assert line["action"] == "rejected" and error in line["reason"]
