"""Changing the corpus from the web page: an admin action, off by default.

The upload panel exists only when the operator turned it on and set a token of at least
`MIN_TOKEN_CHARS`; a client that guesses wrong is locked out; an upload never replaces a
document silently (the old version is kept outside the corpus); every attempt, accepted or
not, is a line in an audit log. The web page (`ui`) only wires these to its widgets.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import shutil
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from chatbot import documents, guards
from chatbot.config import Settings
from chatbot.markup import md_escape
from chatbot.pipeline import Chatbot

log = logging.getLogger(__name__)

UPLOAD_SUFFIXES = tuple(documents.LOADERS)  # whatever the loader reads


def versions_dir(settings: Settings) -> Path:
    """Where replaced documents are kept: under the index folder, which the indexer never reads,
    and never inside the corpus, where the old version would be indexed again."""
    folder = settings.index_dir / settings.replaced_dir
    if folder.resolve().is_relative_to(settings.corpus_dir.resolve()):
        raise ValueError(f"{folder} (old versions of replaced documents) is inside the corpus "
                         f"{settings.corpus_dir}, so it would be indexed; use an --index folder "
                         "outside the corpus")
    return folder


MIN_TOKEN_CHARS = 16  # secrets.token_urlsafe(24), the README's recipe, gives 32


def uploads_on(settings: Settings, host: str) -> bool:
    """Whether to offer "Add documents". Uploads asked for on a non-loopback address without a
    token raise ValueError (the CLI exits 2): anyone on the network could rewrite the corpus."""
    if not settings.allow_uploads:
        return False
    if len(settings.admin_token.strip()) < MIN_TOKEN_CHARS:
        if settings.admin_token.strip():  # a token a guesser could find is no token
            raise ValueError(f"CHATBOT_ADMIN_TOKEN has {len(settings.admin_token.strip())} "
                             f"characters; use at least {MIN_TOKEN_CHARS}, e.g. python -c "
                             '"import secrets; print(secrets.token_urlsafe(24))"')
        if not guards.is_loopback(host):
            raise ValueError(f"refusing to serve uploads on {host} without CHATBOT_ADMIN_TOKEN; "
                             "set it or drop --allow-uploads")
        log.warning("Uploads stay off: --allow-uploads needs an admin token; "
                    "set CHATBOT_ADMIN_TOKEN")
        return False
    versions_dir(settings)
    log.info("Uploads on: each needs the admin token; audit log %s",
             settings.index_dir / settings.audit_log)
    return True


class AdminGate:
    """Checks the admin token of an upload. A client address that sends `admin_max_failures`
    wrong tokens is locked out for `admin_lockout_minutes`, so the token cannot be guessed by
    brute force (behind a reverse proxy every client has the proxy's address: see docs/ui.md)."""

    def __init__(self, settings: Settings):
        self._token = settings.admin_token.encode()
        self._max = settings.admin_max_failures
        self._lockout_s = settings.admin_lockout_minutes * 60
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def check(self, token: str, client: str, now: float | None = None) -> str | None:
        """Why this upload is not allowed, or None if it is."""
        now = time.monotonic() if now is None else now
        with self._lock:
            recent = [t for t in self._failures.pop(client, []) if now - t < self._lockout_s]
            if len(recent) >= self._max:
                self._failures[client] = recent
                wait = (recent[0] + self._lockout_s - now) / 60
                return f"too many wrong admin tokens; try again in {wait:.0f} min"
            if self._token and hmac.compare_digest(token.encode(), self._token):
                return None
            self._failures[client] = [*recent, now]
            return "wrong admin token" if token else "type the admin token first"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def audit(settings: Settings, who: dict, path: Path, action: str, **details) -> dict:
    """Append one JSON line about an upload (accepted or not) to the audit log, and log it. A
    rejected file is not read: a client without the token could make the server hash 20 files
    of 50 MB with every request (outside security trial)."""
    digest = None if action == "rejected" else _sha256(path)
    record = {"time": datetime.now(timezone.utc).isoformat(timespec="seconds"), **who,
              "file": path.name, "size": path.stat().st_size, "sha256": digest,
              "action": action, **details}
    line = json.dumps(record, ensure_ascii=False)
    target = settings.index_dir / settings.audit_log
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "a", encoding="utf-8") as fh:
        fh.write(line + "\n")
    log.info("upload audit %s", line)  # JSON: a file name cannot forge another log line
    return record


def recent_changes(settings: Settings, count: int = 3) -> str:
    """The last accepted corpus changes from the audit log, newest first, for the upload panel."""
    path = settings.index_dir / settings.audit_log
    if not path.exists():
        return "No documents uploaded yet."
    with open(path, "rb") as fh:  # the tail is enough: the log only grows
        fh.seek(max(fh.seek(0, 2) - 65536, 0))
        lines = fh.read().decode("utf-8", errors="replace").splitlines()
    records = []
    for line in reversed(lines):
        try:
            record = json.loads(line)
        except ValueError:  # the first line of the tail may be cut
            continue
        if record.get("action") != "rejected":
            records.append(record)
        if len(records) == count:
            break
    if not records:
        return "No documents uploaded yet."
    changes = "; ".join(f"{r['time']}: {r.get('saved_as', r['file'])} {r['action']}"
                        for r in records)
    return f"Recent changes: {md_escape(changes)}."


def _safe_name(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name).stem).strip(".-") or "document"
    return stem + Path(name).suffix.lower()


def place(corpus: Path, name: str, replace: bool) -> tuple[Path, str]:
    """Where an upload goes in the corpus and what that does: "added", "replaced" (only when the
    admin asked to) or "renamed" (`name-2.txt`: a document of that name is already there)."""
    target = corpus / _safe_name(name)
    if not target.exists():
        return target, "added"
    if replace:
        return target, "replaced"
    n = 2
    while (renamed := corpus / f"{target.stem}-{n}{target.suffix}").exists():
        n += 1
    return renamed, "renamed"


def keep_old_version(path: Path, settings: Settings) -> Path:
    """Move a document about to be replaced to the versions folder, under a UTC time stamp."""
    folder = versions_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    kept = folder / f"{stamp}-{path.name}"
    shutil.move(path, kept)
    return kept


def check_upload(path: Path, name: str, max_mb: float) -> str | None:
    """Why this file cannot go into the corpus, or None if it can. Megabytes are decimal
    (10^6 bytes), as in `documents.load`, the label and every message."""
    suffix = Path(name).suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        return (f"{name}: wrong file type {suffix or '(none)'}; "
                f"accepted: {', '.join(UPLOAD_SUFFIXES)}")
    size = path.stat().st_size
    if size == 0:
        return f"{name}: the file is empty"
    if size > max_mb * 1e6:
        return f"{name}: {size / 1e6:.1f} MB is over the {max_mb:g} MB limit"
    with tempfile.TemporaryDirectory() as tmp:  # the loader reads it exactly as indexing will
        probe = Path(tmp) / _safe_name(name)
        shutil.copyfile(path, probe)
        try:
            documents.load(probe, Path(tmp), max_mb)
        except documents.LoadError as err:
            return str(err)
    return None


def add_documents(bot: Chatbot, paths: list[str], progress, who: dict,
                  replace: bool = False) -> str:
    """Save the good files into the corpus (renamed, or replacing with the old version kept, when
    the name is taken) and re-index; audit every file; report every file's fate in Markdown."""
    settings, corpus = bot.settings, bot.settings.corpus_dir
    rejected, saved = [], []  # saved: (label, corpus name, how)
    for i, raw in enumerate(paths):
        progress((i, len(paths) + 1), desc="Checking files")
        path = Path(raw)
        problem = check_upload(path, path.name, settings.max_file_mb)
        if problem:
            audit(settings, who, path, "rejected", reason=problem)
            rejected.append(("Rejected", problem))
            continue
        target, action = place(corpus, path.name, replace)
        how, details = "", {}
        if action == "replaced":
            kept = keep_old_version(target, settings)
            how, details = f"the old version is kept as {kept}", {"old_version": str(kept)}
        elif action == "renamed":
            how = (f"a document named {_safe_name(path.name)} is already in the corpus, so "
                   "this one was added beside it (tick Replace to replace it)")
        shutil.copyfile(path, target)
        audit(settings, who, path, action, saved_as=target.name, **details)
        saved.append((action.capitalize(), target.name, how))
    lines = rejected
    if saved:
        progress((len(paths), len(paths) + 1), desc="Re-indexing")
        t0 = time.perf_counter()
        manifest = bot.reindex().manifest
        log.info("Re-indexed after upload of %s in %.1f s", [n for _, n, _ in saved],
                 time.perf_counter() - t0)
        for label, name, how in saved:
            if name in manifest["files"]:
                outcome = "searchable now"
            else:
                label = f"{label}, not indexed"
                outcome = next((p for p in manifest["skipped"] if p.startswith(name)),
                               "no text to index")
            lines.append((label, f"{name}: {outcome}" + (f"; {how}" if how else "")))
    return "\n\n".join(f"**{label}:** {md_escape(text)}" for label, text in lines)


def handle_upload(bot: Chatbot, gate: AdminGate, paths: list[str], token: str, replace: bool,
                  who: dict, progress) -> str:
    """One upload from the page: the token first, then the files. A file listed many times is
    one file, and a rejected upload is audited for its first `max_upload_files` files only: an
    outside security trial listed one 49 MB file 1,000 times without a token, and every listing
    was hashed and audited (29 s of the only worker; 20,000 listings wrote 8.5 MB of log)."""
    limit = bot.settings.max_upload_files
    distinct = list(dict.fromkeys(paths))
    denied = gate.check(token, who["ip"] or "unknown")
    if denied is None and len(distinct) > limit:
        denied = f"{len(distinct)} files at once; send at most {limit} (setting max_upload_files)"
    if denied is None:
        return add_documents(bot, distinct, progress, who, replace)
    for raw in distinct[:limit]:
        audit(bot.settings, who, Path(raw), "rejected", reason=denied, files=len(distinct))
    return f"**Rejected:** {md_escape(denied)}; nothing was added."
