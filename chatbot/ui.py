"""The web chat: a Gradio Blocks app over `Chatbot.stream`, with a sources panel and uploads.

Everything that comes from a document or a user is data: it is HTML-escaped (and, inside chat
messages, Markdown-escaped) before it reaches the page, so a document can never inject markup.
"""
from __future__ import annotations

import html
import logging
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator

import gradio as gr

from chatbot import documents
from chatbot.config import Settings
from chatbot.pipeline import REFUSAL, Answer, Chatbot

log = logging.getLogger(__name__)

UPLOAD_SUFFIXES = tuple(documents.LOADERS)  # whatever the loader reads
DRAFT_LABEL = "*Drafting (not yet checked against the sources)…*"
SEARCHING_PANEL = '<div class="panel-empty">Searching the documents…</div>'
EMPTY_PANEL = '<div class="panel-empty">Ask a question: the passages behind the answer appear here.</div>'
CONCURRENCY = dict(concurrency_id="model", concurrency_limit=1)  # one CPU model: one question at a time

CSS = """
#sources .query { font-size: 0.9em; color: var(--body-text-color-subdued); margin-bottom: 0.5em; }
#sources .citation, .other { border: 1px solid var(--border-color-primary); border-radius: 6px;
  padding: 0.5em 0.7em; margin-bottom: 0.6em; }
.cite-head { font-weight: 600; margin-bottom: 0.3em; }
.cite-head .src { font-family: var(--font-mono); font-weight: 400; font-size: 0.85em; }
.passage { white-space: pre-wrap; font-size: 0.9em; line-height: 1.45; }
.passage mark { background: #fde68a; color: inherit; padding: 0 1px; }
#sources .refusal { border: 2px solid #dc2626; background: #fef2f2; color: #7f1d1d;
  border-radius: 6px; padding: 0.6em 0.8em; }
#sources .dropped del { color: #b91c1c; }
#sources .dropped .reason, #sources .note, #sources .timings { font-size: 0.85em;
  color: var(--body-text-color-subdued); }
#disclaimer { font-size: 0.9em; border-left: 3px solid #f59e0b; padding-left: 0.6em; }
#status, #status p { font-size: 0.85em; color: var(--body-text-color-subdued); }
"""


# -- escaping -------------------------------------------------------------------------------

def esc(text: str) -> str:
    return html.escape(text, quote=True)


_MD_SPECIAL = re.compile(r"([\\`*_\[\]{}()#+!|~$-])")
_MD_ORDERED_LIST = re.compile(r"^(\s*\d+)([.)])", re.M)


def md_escape(text: str) -> str:
    """Document or model text shown literally in a Markdown chat bubble."""
    text = _MD_ORDERED_LIST.sub(r"\1\\\2", _MD_SPECIAL.sub(r"\\\1", text))
    return html.escape(text, quote=False)  # after the backslashes, so entities stay intact


# -- rendering ------------------------------------------------------------------------------

def highlight(text: str, start: int, spans) -> str:
    """Escaped passage text with the cited spans (offsets into the source document) in <mark>."""
    cuts = sorted((max(a - start, 0), min(b - start, len(text))) for a, b in spans)
    out, pos = [], 0
    for a, b in cuts:
        if b <= pos:
            continue
        a = max(a, pos)
        out += [esc(text[pos:a]), f"<mark>{esc(text[a:b])}</mark>"]
        pos = b
    out.append(esc(text[pos:]))
    return "".join(out)


def _where(chunk) -> str:
    page = f", p. {chunk.page}" if chunk.page else ""
    return f'<span class="src">{esc(chunk.source)}{page}</span>'


def _passage_card(cls: str, head: str, body: str) -> str:
    return f'<div class="{cls}"><div class="cite-head">{head}</div><div class="passage">{body}</div></div>'


def _refusal_html(answer: Answer) -> str:
    looked = "".join(f"<li>{esc(s)}</li>" for s in answer.sources)
    return ('<div class="refusal"><strong>Not covered by the documents.</strong>'
            f'<p>Why: {esc(answer.note)}.</p><p>Where I looked:</p><ul>{looked}</ul></div>')


def _dropped_html(answer: Answer) -> str:
    dropped = [c for c in answer.claims if not c.supported]
    if not dropped:
        return ""
    items = "".join(f'<li><del>{esc(c.text)}</del> <span class="reason">— '
                    f'{esc(c.reason or "not supported")}</span></li>' for c in dropped)
    return ('<div class="dropped"><strong>Removed from the draft (not supported):</strong>'
            f"<ul>{items}</ul></div>")


def _duration(ms: float) -> str:
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def sources_html(answer: Answer) -> str:
    """The panel beside the chat: query used, then cited passages, removed sentences or a refusal."""
    parts = [f'<div class="query">Searched for: <q>{esc(answer.query)}</q></div>']
    if answer.refused:
        parts.append(_refusal_html(answer))
    else:
        for c in answer.citations:
            head = f'[{c.n}] <span class="title">{esc(c.chunk.title)}</span> {_where(c.chunk)}'
            parts.append(_passage_card("citation", head, highlight(c.chunk.text, c.chunk.start, c.spans)))
        parts.append(_dropped_html(answer))
        if answer.note:
            parts.append(f'<p class="note">Note: {esc(answer.note)}.</p>')
    timings = " · ".join(f"{k.removesuffix('_ms').replace('_', ' ')} {_duration(v)}"
                         for k, v in answer.timings.items())
    parts.append(f'<p class="timings">{esc(timings)}</p>')
    return "".join(parts)


def others_html(answer: Answer) -> tuple[str, int]:
    """Retrieved passages the answer does not cite, and how many there are."""
    cited = {c.chunk.id for c in answer.citations}
    rest = [h for h in answer.hits if h.chunk.id not in cited]
    cards = [_passage_card("other", f'<span class="title">{esc(h.chunk.title)}</span> {_where(h.chunk)} '
                                    f'<span class="src">score {h.score:.2f}</span>', esc(h.chunk.text))
             for h in rest]
    return "".join(cards) or "<p>None.</p>", len(rest)


def answer_message(answer: Answer) -> str:
    """The chat bubble for a checked answer; a refusal is set apart as a quote."""
    if answer.refused:
        lead = md_escape(REFUSAL)
        return "> " + md_escape(answer.text).replace(lead, f"**{lead}**", 1)
    dropped = sum(not c.supported for c in answer.claims)
    notes = [f"{dropped} unsupported sentence{'s' * (dropped > 1)} removed (see Sources)"] if dropped else []
    notes += [answer.note] if answer.note else []
    return md_escape(answer.text) + (f"\n\n*{md_escape('; '.join(notes))}.*" if notes else "")


def status_markdown(bot: Chatbot) -> str:
    m = bot.index.manifest
    skipped = f" · {len(m['skipped'])} file(s) skipped" if m.get("skipped") else ""
    return (f"**Corpus** `{bot.settings.corpus_dir}`: {len(m['files'])} document(s), "
            f"{m['chunk_count']} chunks · index built {m['built_at']}{skipped}")


def example_questions(bot: Chatbot, count: int = 4) -> list[str]:
    """A spread of the corpus's own FAQ questions / headings, so examples are always answerable."""
    titles = list(dict.fromkeys(c.title for c in bot.index.chunks if c.title.endswith("?")))
    titles = titles or list(dict.fromkeys(c.title for c in bot.index.chunks))
    step = max(len(titles) // count, 1)
    return titles[::step][:count]


# -- uploads --------------------------------------------------------------------------------

def _safe_name(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(name).stem).strip(".-") or "document"
    return stem + Path(name).suffix.lower()


def check_upload(path: Path, name: str, max_mb: float) -> str | None:
    """Why this file cannot go into the corpus, or None if it can."""
    suffix = Path(name).suffix.lower()
    if suffix not in UPLOAD_SUFFIXES:
        return f"{name}: wrong file type {suffix or '(none)'}; accepted: {', '.join(UPLOAD_SUFFIXES)}"
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


def add_documents(bot: Chatbot, paths: list[str], progress) -> str:
    """Save the good files into the corpus and re-index; report every file's fate in Markdown."""
    lines, saved = [], []
    corpus = bot.settings.corpus_dir
    for i, raw in enumerate(paths):
        progress((i, len(paths) + 1), desc="Checking files")
        path = Path(raw)
        problem = check_upload(path, path.name, bot.settings.max_file_mb)
        if problem:
            lines.append(("Rejected", problem))
            continue
        target = corpus / _safe_name(path.name)
        if target.exists():
            lines.append(("Replacing", f"{target.name}: a file of that name was already in the corpus"))
        shutil.copyfile(path, target)
        saved.append(target.relative_to(corpus).as_posix())
    if saved:
        progress((len(paths), len(paths) + 1), desc="Re-indexing")
        t0 = time.perf_counter()
        manifest = bot.reindex().manifest
        log.info("Re-indexed after upload of %s in %.1f s", saved, time.perf_counter() - t0)
        for name in saved:
            if name in manifest["files"]:
                lines.append(("Added", f"{name}: searchable now"))
            else:
                why = [p for p in manifest["skipped"] if p.startswith(name)] or ["not indexed"]
                lines.append(("Not indexed", why[0]))
    return "\n\n".join(f"**{label}:** {md_escape(text)}" for label, text in lines)


# -- the app --------------------------------------------------------------------------------

class Interrupts:
    """Stop / New conversation requests for the answer running in each browser session, checked
    between streamed pieces. (Gradio's `cancels` raced the stream's last updates and sometimes
    left the page thinking the cancelled answer was still pending, so Enter did nothing.)"""

    def __init__(self):
        self._wanted: dict[str, str | None] = {}

    def start(self, session: str) -> None:
        self._wanted[session] = None

    def request(self, session: str, what: str) -> None:
        if session in self._wanted:
            self._wanted[session] = what

    def wanted(self, session: str) -> str | None:
        return self._wanted.get(session)

    def finish(self, session: str) -> None:
        self._wanted.pop(session, None)


def create_app(bot: Chatbot) -> gr.Blocks:
    """The Blocks app; `launch` (or `serve`) runs it. Each browser session has its own history."""
    settings = bot.settings

    interrupts = Interrupts()
    reset = ("", [], [], EMPTY_PANEL, "", gr.Accordion(label="Other retrieved passages"))

    def respond(question: str, chat: list, history: list[str], request: gr.Request) -> Iterator[tuple]:
        question = question.strip()
        if not question:
            yield (gr.skip(),) * 6
            return
        chat = [*chat, {"role": "user", "content": md_escape(question)},
                {"role": "assistant", "content": DRAFT_LABEL}]
        yield "", chat, history, SEARCHING_PANEL, gr.skip(), gr.skip()
        draft, session = "", request.session_hash
        interrupts.start(session)
        try:
            for event in bot.stream(question, history):
                if wanted := interrupts.wanted(session):  # an unchecked draft must not stay on screen
                    chat[-1] = {"role": "assistant", "content": "*Stopped before the answer was checked.*"}
                    yield reset if wanted == "new" else ("", chat, history, EMPTY_PANEL, gr.skip(), gr.skip())
                    return
                if isinstance(event, Answer):
                    chat[-1] = {"role": "assistant", "content": answer_message(event)}
                    others, count = others_html(event)
                    yield ("", chat, [*history, question], sources_html(event), others,
                           gr.Accordion(label=f"Other retrieved passages ({count})"))
                else:
                    draft += event
                    chat[-1] = {"role": "assistant", "content": f"{DRAFT_LABEL}\n\n{md_escape(draft)}"}
                    yield "", chat, history, gr.skip(), gr.skip(), gr.skip()
        except Exception:  # e.g. an unreachable generator server: say so instead of a frozen draft
            log.exception("Answering %r failed", question)
            chat[-1] = {"role": "assistant", "content": "*Sorry, answering failed; the server log says why.*"}
            yield "", chat, history, EMPTY_PANEL, gr.skip(), gr.skip()
        finally:
            interrupts.finish(session)

    def ask(question: str, history: list[str]) -> tuple[dict, list[str]]:
        answer = bot.answer(question, history)
        return answer.to_dict(), [*history, question]

    def stop_answer(request: gr.Request) -> None:
        interrupts.request(request.session_hash, "stop")

    def new_conversation(request: gr.Request) -> tuple:
        interrupts.request(request.session_hash, "new")
        return reset

    def upload(paths: list[str] | None, progress=gr.Progress()) -> tuple[str, str, None]:
        report = add_documents(bot, paths or [], progress) if paths else gr.skip()
        return report, status_markdown(bot), None

    # delete_cache: Gradio's temp copies of uploads go after an hour (the corpus keeps its own copy).
    with gr.Blocks(title="Grounded document chat", analytics_enabled=False,
                   delete_cache=(3600, 3600)) as app:
        history = gr.State([])
        gr.Markdown("## Ask the documents")
        gr.Markdown(md_escape(settings.disclaimer), elem_id="disclaimer")
        status = gr.Markdown(status_markdown(bot), elem_id="status")
        with gr.Row():
            with gr.Column(scale=3):
                chat = gr.Chatbot(label="Conversation", elem_id="chat", height=440, latex_delimiters=[],
                                  feedback_options=None, buttons=["copy"])
                with gr.Row():
                    box = gr.Textbox(show_label=False, placeholder="Ask a question and press Enter",
                                     elem_id="question", scale=6, autofocus=True, max_lines=4)
                    send = gr.Button("Send", variant="primary", scale=1, min_width=80)
                    stop = gr.Button("Stop", variant="stop", scale=1, min_width=80)
                new = gr.Button("New conversation", size="sm")
                gr.Examples([[q] for q in example_questions(bot)], inputs=box,
                            label="Examples from the documents")
            with gr.Column(scale=2):
                gr.Markdown("### Sources")
                sources = gr.HTML(EMPTY_PANEL, elem_id="sources")
                with gr.Accordion("Other retrieved passages", open=False, elem_id="others-box") as others_box:
                    others = gr.HTML("", elem_id="others")
                with gr.Accordion("Add documents", open=False):
                    files = gr.File(label=f"Upload {', '.join(UPLOAD_SUFFIXES)} files, up to "
                                          f"{settings.max_file_mb:g} MB each",
                                    file_count="multiple", file_types=list(UPLOAD_SUFFIXES), elem_id="upload")
                    upload_report = gr.Markdown(elem_id="upload-report")

        outputs = [box, chat, history, sources, others, others_box]
        for trigger in (box.submit, send.click):
            trigger(respond, [box, chat, history], outputs, api_visibility="private", **CONCURRENCY)
        stop.click(stop_answer, None, None, queue=False, api_visibility="private")
        for trigger in (new.click, chat.clear):  # the chat's own bin icon starts over too
            trigger(new_conversation, None, outputs, queue=False, api_visibility="private")
        files.upload(upload, files, [upload_report, status, files], api_visibility="private", **CONCURRENCY)

        # The JSON API, sharing the session's history so follow-ups work from gradio_client too.
        api_question, api_answer = gr.Textbox(visible=False), gr.JSON(visible=False)
        gr.Button(visible=False).click(ask, [api_question, history], [api_answer, history],
                                       api_name="ask", **CONCURRENCY)
    return app


def launch(app: gr.Blocks, settings: Settings, host: str = "127.0.0.1", port: int = 7860,
           block: bool = True) -> None:
    """Queue (one model, so one question at a time) and start serving."""
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # local fonts: works offline
    app.queue(default_concurrency_limit=1).launch(
        server_name=host, server_port=port, prevent_thread_lock=not block, css=CSS, theme=theme,
        max_file_size=int(settings.max_file_mb * 1e6), ssr_mode=False, show_error=True, quiet=True,
        footer_links=["api"])


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Load the index and models first, then serve: the first visitor never waits for a model."""
    t0 = time.perf_counter()
    bot = Chatbot(settings)
    app = create_app(bot)
    log.info("Models and index ready in %.1f s; serving on http://%s:%d",
             time.perf_counter() - t0, host, port)
    launch(app, settings, host, port)
