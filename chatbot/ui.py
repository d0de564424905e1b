"""The web chat: a Gradio Blocks app over `Chatbot.stream`, with a sources panel and uploads.

Everything that comes from a document or a user is data: it is HTML-escaped (and, inside chat
messages, Markdown-escaped) before it reaches the page, so a document can never inject markup.
Changing the corpus is an admin action (`admin`): the upload panel exists only when the operator
turned it on and set a token, never replaces a document silently, and every attempt goes to an
audit log.
"""
from __future__ import annotations

import logging
import re
import time
from typing import Iterator

import gradio as gr

from chatbot import admin, guards, memory
from chatbot.answer import Code
from chatbot.answerability import Coverage
from chatbot.config import Settings
from chatbot.markup import esc, md_escape
from chatbot.pipeline import REFUSAL, Answer, Chatbot

log = logging.getLogger(__name__)

DRAFT_LABEL = "*Checking the answer against the sources…*"
STOPPED_EARLY = "*Stopped before the answer was finished.*"
SEARCHING_PANEL = '<div class="panel-empty">Searching the documents…</div>'
EMPTY_PANEL = ('<div class="panel-empty">Ask a question: the passages behind the answer '
               'appear here.</div>')
# one CPU model: one question at a time
CONCURRENCY = dict(concurrency_id="model", concurrency_limit=1)

CSS = """
#sources .query { font-size: 0.9em; color: var(--body-text-color-subdued); margin-bottom: 0.5em; }
#sources .citation, .other { border: 1px solid var(--border-color-primary); border-radius: 6px;
  padding: 0.5em 0.7em; margin-bottom: 0.6em; }
.cite-head { font-weight: 600; margin-bottom: 0.3em; }
.cite-head .src { font-family: var(--font-mono); font-weight: 400; font-size: 0.85em; }
.passage { white-space: pre-wrap; font-size: 0.9em; line-height: 1.45; }
.passage mark { background: #fde68a; color: inherit; padding: 0 1px; }
#sources .flagged { border-left: 3px solid #dc2626; padding-left: 0.6em; font-size: 0.9em; }
#sources .partial { border: 2px solid #d97706; background: #fffbeb; color: #78350f;
  border-radius: 6px; padding: 0.6em 0.8em; margin-bottom: 0.6em; }
#sources .refusal { border: 2px solid #dc2626; background: #fef2f2; color: #7f1d1d;
  border-radius: 6px; padding: 0.6em 0.8em; }
#sources .dropped del { color: #b91c1c; }
#sources details.checked summary { font-size: 0.85em; color: var(--body-text-color-subdued);
  cursor: pointer; }
#sources .dropped .reason, #sources .note, #sources .timings { font-size: 0.85em;
  color: var(--body-text-color-subdued); }
#disclaimer { font-size: 0.9em; border-left: 3px solid #f59e0b; padding-left: 0.6em; }
#status, #status p { font-size: 0.85em; color: var(--body-text-color-subdued); }
#sources .citation { scroll-margin-top: 0.5em; }
#sources .citation:target { outline: 3px solid #f59e0b; }  /* the card an [n] links to */
@media (max-width: 640px) {  /* phone: the box gets the row, Send and Stop stay button-sized */
  #ask-row { justify-content: flex-end; }
  #ask-row > .form { flex: 1 1 100% !important; }  /* the question box is wrapped in .form */
  #ask-row > button { flex: 0 0 auto !important; width: auto !important;
                      min-width: 6em !important; }
}
"""


# -- escaping -------------------------------------------------------------------------------

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


def _passage_card(cls: str, head: str, body: str, anchor: str = "") -> str:
    anchor = f' id="{anchor}"' if anchor else ""
    return (f'<div class="{cls}"{anchor}><div class="cite-head">{head}</div>'
            f'<div class="passage">{body}</div></div>')


def cite_id(turn: int, n: int) -> str:
    """The anchor of citation card n of a session's turn-th answer: an [n] in an older bubble
    must not jump to the newest answer's card n (the panel only holds the newest)."""
    return f"cite-{turn}-{n}"


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


def sources_html(answer: Answer, turn: int = 1) -> str:
    """The panel beside the chat: query used, then cited passages or a refusal; how the answer
    was checked (removed draft sentences, notes, timings) folded away under a summary line:
    an outside trial's patients read "support 0.37 < 0.75" and "generate 17.3 s" as errors."""
    parts = [f'<div class="query">Searched for: <q>{esc(answer.query)}</q></div>']
    checked = []
    if answer.refused:
        parts.append(_refusal_html(answer))
    else:
        for c in answer.citations:
            head = f'[{c.n}] <span class="title">{esc(c.chunk.title)}</span> {_where(c.chunk)}'
            body = highlight(c.chunk.text, c.chunk.start, c.spans)
            parts.append(_passage_card("citation", head, body, cite_id(turn, c.n)))
        checked.append(_dropped_html(answer))
        if answer.coverage is Coverage.PARTIAL:
            parts.insert(1, f'<div class="partial"><strong>Partial answer:</strong> '
                            f'{esc(answer.note)}; the passages below are the nearest topic.</div>')
        elif answer.note:
            checked.append(f'<p class="note">Note: {esc(answer.note)}.</p>')
    parts.append(_flagged_html(answer))
    timings = " · ".join(f"{k.removesuffix('_ms').replace('_', ' ')} {_duration(v)}"
                         for k, v in answer.timings.items())
    checked.append(f'<p class="timings">{esc(timings)}</p>')
    parts.append('<details class="checked"><summary>How this answer was checked</summary>'
                 f'{"".join(checked)}</details>')
    return "".join(parts)


def _flagged_html(answer: Answer) -> str:
    """A warning on each retrieved document that holds text addressed to the assistant."""
    flagged = list(answer.flagged)
    if not flagged:
        return ""
    names = ", ".join(f"<code>{esc(name)}</code>" for name in flagged)
    return (f'<div class="flagged"><strong>Warning:</strong> {names} contain'
            f'{"s" * (len(flagged) == 1)} text that gives the assistant instructions; it is '
            "treated as data and never quoted as an answer. Tell whoever curates the documents."
            "</div>")


def others_html(answer: Answer) -> tuple[str, int]:
    """Retrieved passages the answer does not cite, and how many there are."""
    cited = {c.chunk.id for c in answer.citations}
    rest = [h for h in answer.hits if h.chunk.id not in cited]
    cards = [_passage_card("other",
                           f'<span class="title">{esc(h.chunk.title)}</span> {_where(h.chunk)} '
                           f'<span class="src">score {h.score:.2f}</span>', esc(h.chunk.text))
             for h in rest]
    return "".join(cards) or "<p>None.</p>", len(rest)


_ESCAPED_MARKER = re.compile(r"\\\[(\d+)\\\]")  # "[n]" after md_escape: \[n\]


def link_citations(escaped: str, numbers: set[int], turn: int) -> str:
    """Make each escaped [n] of a known citation a link to its card in the Sources panel. Only
    the marker becomes markup: the text around it stays escaped, and an [n] that is no
    citation of this answer (a document's own footnote mark, say) stays plain text."""
    def link(m: re.Match) -> str:
        n = int(m.group(1))
        return f"[{m.group(0)}](#{cite_id(turn, n)})" if n in numbers else m.group(0)
    return _ESCAPED_MARKER.sub(link, escaped)


_CITATION_LINK = re.compile(r"\[(\\\[\d+\\\])\]\(#cite-\d+-\d+\)")


def unlink_citations(message: dict) -> dict:
    """An earlier answer's [n] as plain text: its cards left the Sources panel with the next
    question, and in an outside trial its links led nowhere, or to another answer's [n]."""
    if message.get("role") != "assistant" or not isinstance(message.get("content"), str):
        return message
    return {**message, "content": _CITATION_LINK.sub(r"\1", message["content"])}


def answer_message(answer: Answer, turn: int = 1) -> str:
    """The chat bubble for a checked answer, [n] linked to its source; a refusal is a quote."""
    if answer.refused:
        lead = md_escape(REFUSAL)
        return "> " + md_escape(answer.text).replace(lead, f"**{lead}**", 1)
    body = answer.text[len(answer.preamble):len(answer.text) - len(answer.advice)].strip()
    text = link_citations(md_escape(body), {c.n for c in answer.citations}, turn)
    if answer.coverage is Coverage.PARTIAL:  # set apart, so it cannot be read as a full answer
        text = f"**Partial answer.** {md_escape(answer.preamble)}\n\n> {text}"
        if answer.advice:
            text += f"\n\n{md_escape(answer.advice)}"
    if answer.outcome.code is Code.STOPPED:
        text += "\n\n*Stopped before the end: this answer may be incomplete.*"
    return text  # how it was checked is in the Sources panel


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


# -- the app --------------------------------------------------------------------------------

def requester(request: gr.Request) -> dict:
    """Who sent a request, for the audit log: the Gradio user if logged in, and the address."""
    return {"user": getattr(request, "username", None),
            "ip": getattr(getattr(request, "client", None), "host", None)}


def remembered(history: list[str], question: str, answer: Answer) -> list[str]:
    """The conversation after this answer. A question refused as too long is not kept: 30 calls
    of 10 MB grew the server by 300 MB that never came back (outside security trial)."""
    return history if answer.outcome.code is Code.TOO_LONG else [*history, question]


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


def create_app(bot: Chatbot, uploads: bool = False) -> gr.Blocks:
    """The Blocks app; `launch` (or `serve`) runs it. Each browser session has its own history.
    The "Add documents" panel is built only with `uploads` (see `uploads_on`): absent, not
    hidden."""
    settings = bot.settings

    interrupts = Interrupts()
    reset = ("", [], [], EMPTY_PANEL, "", gr.Accordion(label="Other retrieved passages"))

    def respond(question: str, chat: list, history: list[str],
                request: gr.Request) -> Iterator[tuple]:
        question = question.strip()
        if not question:
            yield (gr.skip(),) * 6
            return
        limit = settings.max_question_chars  # a longer one is refused, shown cut, not kept
        shown = question if len(question) <= limit else question[:limit] + "…"
        chat = [*map(unlink_citations, chat), {"role": "user", "content": md_escape(shown)},
                {"role": "assistant", "content": DRAFT_LABEL}]
        draft, session, turn = "", request.session_hash, len(history) + 1
        interrupts.start(session)  # before the page shows the answer box: Stop works from then on
        # The previous answer's passages go too: they are not about this question.
        yield "", chat, history, SEARCHING_PANEL, "", gr.Accordion(label="Other retrieved passages")
        try:
            for event in bot.stream(question, history,
                                    cancelled=lambda: interrupts.wanted(session) is not None):
                if interrupts.wanted(session) == "new":
                    yield reset
                    return
                if isinstance(event, Answer) and event.outcome.code is Code.STOPPED \
                        and not event.citations:  # stopped before any sentence was checked
                    chat[-1] = {"role": "assistant", "content": STOPPED_EARLY}
                    yield "", chat, history, EMPTY_PANEL, gr.skip(), gr.skip()
                    return
                if isinstance(event, Answer):  # a stopped one keeps what was shown
                    chat[-1] = {"role": "assistant", "content": answer_message(event, turn)}
                    others, count = others_html(event)
                    yield ("", chat, remembered(history, question, event),
                           sources_html(event, turn), others,
                           gr.Accordion(label=f"Other retrieved passages ({count})"))
                else:  # a sentence that passed the check: shown at once, never unchecked text
                    draft += event
                    chat[-1] = {"role": "assistant", "content": md_escape(draft)}
                    yield "", chat, history, gr.skip(), gr.skip(), gr.skip()
        except Exception:  # e.g. an unreachable generator server: say so instead of a frozen draft
            log.exception("Answering %r failed", question)
            chat[-1] = {"role": "assistant",
                        "content": "*Sorry, answering failed; the server log says why.*"}
            yield "", chat, history, EMPTY_PANEL, gr.skip(), gr.skip()
        finally:
            interrupts.finish(session)

    def ask(question: str | None, history: list[str]) -> tuple[dict, list[str]]:
        question = question if isinstance(question, str) else ""  # `null` from the API
        answer = bot.answer(question, history)
        return answer.to_dict(), remembered(history, question, answer)

    def stop_answer(request: gr.Request) -> None:
        interrupts.request(request.session_hash, "stop")

    def new_conversation(request: gr.Request) -> tuple:
        interrupts.request(request.session_hash, "new")
        return reset

    gate = admin.AdminGate(settings) if uploads else None

    def upload(paths: list[str] | None, token: str, replace: bool, request: gr.Request,
               progress=gr.Progress()) -> Iterator[tuple]:
        if not paths:
            yield (gr.skip(),) * 4
            return
        yield f"Checking {len(paths)} file(s)…", gr.skip(), gr.skip(), gr.skip()
        report = admin.handle_upload(bot, gate, paths, token or "", bool(replace),
                                     requester(request), progress)
        yield report, status_markdown(bot), None, False  # "Replace" holds for one upload only

    def refresh() -> tuple[str, ...]:  # on page load: another tab may have changed the corpus
        if not uploads:
            return status_markdown(bot)
        return status_markdown(bot), admin.recent_changes(settings)

    # delete_cache: Gradio's temp copies of uploads go after an hour
    # (the corpus keeps its own copy).
    with gr.Blocks(title="Grounded document chat", analytics_enabled=False,
                   delete_cache=(3600, 3600)) as app:
        history = gr.State([])
        gr.Markdown("## Ask the documents")
        gr.Markdown(md_escape(settings.disclaimer), elem_id="disclaimer")
        status = gr.Markdown(status_markdown(bot), elem_id="status")
        with gr.Row():
            with gr.Column(scale=3):
                chat = gr.Chatbot(label="Conversation", elem_id="chat", height=440,
                                  latex_delimiters=[], feedback_options=None, buttons=["copy"])
                with gr.Row(elem_id="ask-row"):
                    box = gr.Textbox(show_label=False, placeholder="Ask a question and press Enter",
                                     elem_id="question", scale=6, autofocus=True, max_lines=4,
                                     max_length=settings.max_question_chars)
                    send = gr.Button("Send", variant="primary", scale=1, min_width=80)
                    stop = gr.Button("Stop", variant="stop", scale=1, min_width=80)
                new = gr.Button("New conversation", size="sm")
                examples = gr.Examples([[q] for q in example_questions(bot)], inputs=box,
                                       label="Examples from the documents")
            with gr.Column(scale=2):
                gr.Markdown("### Sources")
                sources = gr.HTML(EMPTY_PANEL, elem_id="sources")
                with gr.Accordion("Other retrieved passages", open=False,
                                  elem_id="others-box") as others_box:
                    others = gr.HTML("", elem_id="others")
                if uploads:
                    with gr.Accordion("Add documents (admin)", open=False, elem_id="add-documents"):
                        token = gr.Textbox(label="Admin token", type="password", max_lines=1,
                                           elem_id="admin-token")
                        replace = gr.Checkbox(elem_id="replace", label=(
                            "Replace a document of the same name (the old version is kept); "
                            "otherwise it is added as name-2"))
                        kinds = admin.UPLOAD_SUFFIXES
                        files = gr.File(label=f"Upload {', '.join(kinds)} files, up to "
                                              f"{settings.max_file_mb:g} MB each",
                                        file_count="multiple", file_types=list(kinds),
                                        elem_id="upload")
                        upload_report = gr.Markdown(admin.recent_changes(settings),
                                                    elem_id="upload-report")

        outputs = [box, chat, history, sources, others, others_box]
        # an example asks itself: in an outside trial a click only filled the box
        for trigger in (box.submit, send.click, examples.load_input_event.then):
            trigger(respond, [box, chat, history], outputs, api_visibility="private", **CONCURRENCY)
        stop.click(stop_answer, None, None, queue=False, api_visibility="private")
        for trigger in (new.click, chat.clear):  # the chat's own bin icon starts over too
            trigger(new_conversation, None, outputs, queue=False, api_visibility="private")
        if uploads:
            files.upload(upload, [files, token, replace], [upload_report, status, files, replace],
                         api_visibility="private", **CONCURRENCY)
        app.load(refresh, None, [status, upload_report] if uploads else [status], queue=False,
                 api_visibility="private")

        # The JSON API, sharing the session's history so follow-ups work from gradio_client too.
        api_question, api_answer = gr.Textbox(visible=False), gr.JSON(visible=False)
        gr.Button(visible=False).click(ask, [api_question, history], [api_answer, history],
                                       api_name="ask", **CONCURRENCY)
    return app


def launch(app: gr.Blocks, settings: Settings, host: str = "127.0.0.1", port: int = 7860,
           block: bool = True, uploads: bool = False) -> None:
    """Queue (one model, so one question at a time) and serve. The queue and the sessions kept
    are bounded, so a flood of clients costs neither unbounded memory nor waits (a forgotten
    session's next follow-up is read on its own). Without uploads Gradio's own file route
    accepts nothing; with them its limit is given in the binary megabytes its error message
    counts in, so that message names the same number as the label, and `check_upload`
    (decimal MB, like the loader) is the limit that holds."""
    guards.trust_no_forwarded_address()
    theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                              font_mono=["ui-monospace", "monospace"])  # local fonts: works offline
    max_bytes = int(settings.max_file_mb * 2**20) if uploads else 0
    app.queue(default_concurrency_limit=1, max_size=settings.queue_size).launch(
        server_name=host, server_port=port, prevent_thread_lock=not block, css=CSS, theme=theme,
        max_file_size=max_bytes, state_session_capacity=settings.sessions_kept, ssr_mode=False,
        show_error=False, quiet=True, footer_links=["api"],
        app_kwargs={"middleware": guards.middleware(host, uploads, settings)})


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 7860) -> None:
    """Load the index and models first, then serve: the first visitor never waits for a model.
    Whether uploads may be served is decided before anything loads, so a refusal is instant."""
    uploads = admin.uploads_on(settings, host)
    memory.fewer_arenas()
    t0 = time.perf_counter()
    bot = Chatbot(settings)
    app = create_app(bot, uploads)
    log.info("Models and index ready in %.1f s; serving on http://%s:%d",
             time.perf_counter() - t0, host, port)
    launch(app, settings, host, port, uploads=uploads)
