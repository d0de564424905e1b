"""Command line: `python -m chatbot {ingest,ask,chat,serve,eval,bench} --help`. A thin shell over
the pipeline."""
from __future__ import annotations

import argparse
import errno
import json
import logging
import sys
from pathlib import Path

from chatbot.config import CHOICES, load_settings

log = logging.getLogger("chatbot")


def _settings(args):
    return load_settings(args.config, corpus_dir=getattr(args, "corpus", None),
                         index_dir=getattr(args, "index", None),
                         generator=getattr(args, "generator", None),
                         top_k=getattr(args, "k", None))


# Each command reads its settings before importing the heavy modules: a bad setting is reported
# at once, not after seconds of loading torch.

def cmd_ingest(args) -> int:
    settings = _settings(args)
    from chatbot import glossary, index, memory
    from chatbot.embedding import make_bulk_embedder

    glossary.load(settings.corpus_dir)  # a malformed glossary is said before the work, not after
    memory.keep_freed()
    # skipped files are logged, with the reason, as read; bulk embedding runs on OpenVINO
    built = index.rebuild(settings, make_bulk_embedder(settings), force=args.force)
    glossary.load(settings.corpus_dir, frozenset(built.document_frequency))  # misspelt terms
    return 0


def _print_answer(answer, as_json: bool, shown: str = "") -> None:
    """The answer and its sources; `shown` is the part already streamed to the terminal."""
    if as_json:
        print(json.dumps(answer.to_dict(), ensure_ascii=False, indent=2))
        return
    print(answer.text if not shown else answer.text.removeprefix(shown) or "")
    for c in answer.citations:
        print(f"  [{c.n}] {c.chunk.source} — {c.chunk.title}")
    if answer.coverage.value == "partial":
        print("  (partial answer: the documents may not answer exactly this)")
    elif answer.note and not answer.refused:
        print(f"  (note: {answer.note})")


def cmd_ask(args) -> int:
    question = " ".join(args.question).strip()
    if not question:  # said before the models load, and as a usage error
        log.error('the question is empty; ask one, e.g. ask "What do pedicle screws do?"')
        return 2
    settings = _settings(args)
    from chatbot.pipeline import Chatbot

    bot = Chatbot(settings)
    if args.json:
        _print_answer(bot.answer(question), True)
    else:
        _stream_answer(bot, question, [])
    return 0


def _stream_answer(bot, question: str, history: list[str]) -> None:
    """Print checked sentences as they pass (nothing is taken back), then the sources."""
    shown = ""
    for event in bot.stream(question, history):
        if isinstance(event, str):
            print(event, end="", flush=True)
            shown += event
    _print_answer(event, False, shown)


def cmd_chat(args) -> int:
    settings = _settings(args)
    from chatbot.pipeline import Chatbot

    bot = Chatbot(settings)
    print(settings.disclaimer)
    print("Ask a question (empty line or Ctrl-D to quit).")
    history: list[str] = []
    while True:
        try:
            question = input("> ").strip()
        except EOFError:
            break
        if not question:
            break
        if not sys.stdin.isatty():  # piped questions: the transcript shows what was asked
            print(question)
        _stream_answer(bot, question, history)
        history.append(question)
    return 0


def cmd_serve(args) -> int:
    from chatbot import ui

    settings = _settings(args)  # CHATBOT_ALLOW_UPLOADS works too; the flag can only turn them on
    ui.serve(settings.replace(allow_uploads=args.allow_uploads or None), args.host, args.port)
    return 0


def cmd_eval(args) -> int:
    settings = _settings(args)
    from chatbot import evaluation

    return evaluation.main(args, settings)


def cmd_llm_server(args) -> int:
    """The packaged LLM as an OpenAI-compatible HTTP server, for app processes that set
    generator = "openai" (README "Scaling out")."""
    settings = _settings(args)
    import signal

    from chatbot import models

    gguf = models.gguf_path(settings.llm_model, settings.cache_dir)
    stop = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # before llama.cpp starts its threads
    server = models.llama_server(gguf, settings.llm_threads, settings.llm_context,
                                 settings.llm_batch, settings.llm_cache_mb,
                                 settings.llm_draft_tokens, settings.llm_draft_ngram,
                                 host=args.host, port=args.port)
    log.info("%s answering on http://%s:%d/v1 (Ctrl-C stops it)", gguf.name, args.host, args.port)
    print(f"openai_base_url = \"http://{args.host}:{args.port}/v1\"", flush=True)
    try:
        signal.sigwait(stop)
    finally:
        del server
    return 0


def cmd_bench(args) -> int:
    settings = _settings(args)
    from chatbot import benchmark

    return benchmark.main(args, settings)


GENERATOR_HELP = "who words the answer (default: local, Qwen2.5-Coder-0.5B)"


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that says where the help is."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}; see `{self.prog} --help`\n")


def _global_options(p: argparse.ArgumentParser, top_level: bool) -> None:
    """--config and -v, accepted before and after the sub-command. After it their default is
    SUPPRESS, so that leaving them out there keeps what was given before it."""
    p.add_argument("--config", type=Path, default=None if top_level else argparse.SUPPRESS,
                   help="TOML file of settings: any field of Settings (chatbot/config.py), "
                   "e.g. top_k = 6; see Configuration in README.md")
    p.add_argument("-v", "--verbose", action="store_true",
                   default=False if top_level else argparse.SUPPRESS, help="debug logging")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m chatbot", description=(
        "A grounded, offline chatbot: answers only from the documents in the corpus, with "
        "citations, and says so when the documents do not cover a question."))
    _global_options(parser, top_level=True)
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def command(name: str, help: str):
        """A command's parser; its --help opens with the line `--help` lists it with."""
        return sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")

    def common(p):
        _global_options(p, top_level=False)
        p.add_argument("--corpus", type=Path, help="folder of documents (default: corpus)")
        p.add_argument("--index", type=Path, help="index folder (default: index)")
        return p

    p = common(command("ingest", "build the index from the corpus"))
    p.add_argument("--force", action="store_true", help=(
        "rebuild even an index folder that belongs to another corpus or whose owner cannot be "
        "read (see docs/index-safety.md)"))
    p.set_defaults(func=cmd_ingest)
    for name, func, helptext in (("ask", cmd_ask, "answer one question"),
                                 ("chat", cmd_chat,
                                  "interactive chat in the terminal, with follow-ups")):
        p = common(command(name, helptext))
        p.add_argument("--generator", choices=CHOICES["generator"], help=GENERATOR_HELP)
        p.add_argument("-k", type=int, help="passages to retrieve (default: 4)")
        if name == "ask":
            p.add_argument("question", nargs="+",
                           help="the question; quotes are optional (ask What do screws do?)")
            p.add_argument("--json", action="store_true",
                           help="print the answer as one JSON object")
        p.set_defaults(func=func)
    p = common(command("serve", "web chat (Gradio) on http://127.0.0.1:7860"))
    p.add_argument("--host", default="127.0.0.1", help=(
        "address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 opens it to the "
        "network)"))
    p.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    p.add_argument("--generator", choices=CHOICES["generator"], help=GENERATOR_HELP)
    p.add_argument("--allow-uploads", action="store_true",
                   help="offer an \"Add documents\" panel; each upload needs CHATBOT_ADMIN_TOKEN")
    p.set_defaults(func=cmd_serve)
    p = command("llm-server", "the packaged LLM as an OpenAI-compatible server")
    _global_options(p, top_level=False)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port (default: 8080)")
    p.set_defaults(func=cmd_llm_server)
    p = common(command("eval", "grounding evaluation of a questions file"))
    p.add_argument("questions", type=Path, help="JSONL file of questions")
    p.add_argument("--out", type=Path, default=Path("eval-out"),
                   help="report folder (default: eval-out)")
    p.add_argument("--retrieval-only", action="store_true",
                   help="skip generation; retrieval metrics only")
    p.add_argument("-k", type=int, help="passages to retrieve (default: 4)")
    p.add_argument("--generator", choices=CHOICES["generator"], help=GENERATOR_HELP)
    p.set_defaults(func=cmd_eval)
    p = command("bench",
                "measure ingest, retrieval, start-up, the LLM and memory on this machine")
    _global_options(p, top_level=False)
    p.add_argument("--corpus", type=Path, help="folder of documents (default: corpus)")
    p.add_argument("--out", type=Path, help="write the figures to this JSON file")
    p.add_argument("--generator", choices=CHOICES["generator"], help=GENERATOR_HELP)
    p.add_argument("--questions", type=Path,
                   help="JSONL questions for retrieval and answers (default: the chunk titles)")
    p.add_argument("--repeats", type=int, default=3, help="runs of each start-up (default: 3)")
    p.add_argument("--ingest-repeats", type=int, default=1,
                   help="whole ingests and embedder-alone passes; the fastest counts (default: 1)")
    p.set_defaults(func=cmd_bench)
    parser.commands = sub.choices  # type: ignore[attr-defined]  # name -> its parser
    return parser


def main(argv: list[str] | None = None) -> int:
    from chatbot import models

    models.offline()  # this process is ours: offline before gradio or transformers import the hub
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # the sub-command's own help says what it takes
        parser.commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    if sys.stderr.isatty():
        from rich.logging import RichHandler

        handler: logging.Handler = RichHandler(show_path=False, show_time=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:  # piped or captured: one plain line per message, never wrapped
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[handler])
    for noisy in ("faiss", "sentence_transformers", "httpx", "transformers", "bm25s", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from chatbot.documents import LoadError
    from chatbot.index import IndexError_
    from chatbot.models import ModelMissing
    from chatbot.stores import DatabaseError

    try:
        return args.func(args)
    except (LoadError, IndexError_, ModelMissing, DatabaseError,
            ValueError) as err:  # ValueError includes SettingsError
        log.error("%s", err)
        return 2
    except OSError as err:  # a file or folder named on the command line that cannot be used
        hint = ("a file is where a folder must be; move it away" if err.errno == errno.EEXIST
                and err.filename and Path(err.filename).is_file()
                else "check the path and its permissions")
        log.error("%s: %s; %s", err.filename or "a file", err.strerror or err, hint)
        return 2
    except KeyboardInterrupt:  # after a progress bar's unfinished line
        print(file=sys.stderr)
        log.warning("Interrupted; an index being built is not in service yet (the last good one "
                    "is), and `ingest` resumes where it stopped")
        return 130


if __name__ == "__main__":
    sys.exit(main())
