"""A serving process in miniature, for the benchmark: load the pipeline as `serve` does, answer
the questions given, print {"serve_rss_mb", "serve_peak_rss_mb"} as one JSON line. With
`--ready` it prints "ready" as soon as the pipeline is loaded, and stops (start-up timing)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from chatbot.benchmark.machine import peak_rss_mb, rss_mb
from chatbot.config import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--index", type=Path, required=True)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--ready", action="store_true", help="say when loaded, then stop")
    parser.add_argument("questions", nargs="*")
    args = parser.parse_args()
    from chatbot.pipeline import Chatbot

    bot = Chatbot(load_settings(args.config, corpus_dir=args.corpus, index_dir=args.index))
    if args.ready:
        print("ready", flush=True)
        return
    for question in args.questions:
        bot.answer(question)
    print(json.dumps({"serve_rss_mb": round(rss_mb(), 1),
                      "serve_peak_rss_mb": round(peak_rss_mb(), 1)}))


if __name__ == "__main__":
    main()
