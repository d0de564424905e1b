"""The benchmark's ingest figures in a process of their own, as `python -m chatbot ingest` has
it: torch (bulk embedding) never shares a process with the LLM figures, which it slows (decode
24 -> 18 tok/s after a torch batch in the same process, measured). Prints one JSON line."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from chatbot.benchmark import measure
from chatbot.benchmark.machine import peak_rss_mb
from chatbot.config import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True, help="folder for the indexes")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--config", type=Path)
    args = parser.parse_args()
    from chatbot import index as index_mod, memory
    from chatbot.embedding import make_bulk_embedder

    memory.keep_freed()  # as `chatbot ingest` does
    settings = load_settings(args.config, corpus_dir=args.corpus)
    embedder = make_bulk_embedder(settings)
    result = measure.ingest(settings, embedder, args.work, args.repeats)
    built = index_mod.load(Path(result["index_dir"]))
    result.update(measure.embed_only(built, settings, embedder, args.repeats))
    result["ingest_peak_rss_mb"] = round(peak_rss_mb(), 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
