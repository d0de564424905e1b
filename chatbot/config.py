"""All settings in one place. Precedence: defaults < config file < CHATBOT_* environment < CLI flags."""
from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    corpus_dir: Path = Path("corpus")
    index_dir: Path = Path("index")
    # Converted model weights (GGUF -> safetensors) are cached here so later starts take seconds.
    cache_dir: Path = field(default_factory=lambda: Path.home() / ".cache" / "chatbot")

    # Chunking: a FAQ entry or a heading's section stays whole up to this size.
    chunk_chars: int = 1200
    chunk_overlap_sentences: int = 1
    max_file_mb: float = 50.0

    # Index scaling (docs/retrieval.md has the measurements behind the defaults).
    hnsw_min_chunks: int = 20000  # from this many chunks on, an HNSW graph replaces exact search
    hnsw_m: int = 32  # HNSW links per node: more = better recall, more memory
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 256  # HNSW candidates per query: recall@10 .98 at 110k chunks, 0.3 ms

    # Retrieval.
    top_k: int = 4
    retrieval_mode: str = "blend"  # "dense", "bm25", "blend" (dense + lexical_weight * BM25) or "rrf"
    rrf_k: int = 60  # reciprocal rank fusion: a chunk scores sum of 1 / (rrf_k + rank) over both rankings
    lexical_weight: float = 0.2  # BM25's share in the blended score; 0 = dense only
    title_weight: float = 0.2  # share of the question's similarity to the document title (blend)
    diversity: float = 0.1  # each further chunk of an already ranked document loses this share
    min_score: float = 0.30  # best dense score below this: the documents do not cover the question
    follow_up_margin: float = 0.15  # a follow-up scoring below min_score + this is read with the last question

    # Evidence selection and grounding (thresholds calibrated on tests/data/*.jsonl).
    max_evidence_sentences: int = 3
    strong_match: float = 0.62  # a passage sentence this similar to the question answers it...
    evidence_margin: float = 0.15  # also quote sentences this close to the top passage's best one
    second_passage_score: float = 0.5  # another passage's best sentence must also reach this
    support_threshold: float = 0.75  # blended support a claim needs (strict: a false "supported" is the costly error)
    claim_zipf: float = 4.0  # an answer word rarer than this in English must be in the passage
    question_zipf: float = 5.3  # ...else a question word rarer than this must be in the passages
    synonym_similarity: float = 0.6  # ...or have a passage word at least this similar
    common_word_share: float = 0.05  # ...unless the corpus uses it in this share of its documents
    common_word_min_docs: int = 20  # ...and in at least this many (a small corpus has no common words)
    # Instructions to the assistant in documents and questions (chatbot/instructions.py): detector
    # scores, chosen by cross-validation and measured on held-out texts by `python -m
    # bench.instruction_detector` (docs/instructions.md). A flagged sentence is never quoted.
    instruction_threshold: float = 0.567  # 1 % of ordinary texts flagged: held-out recall .82, FPR .0095
    instruction_neighbour_threshold: float = 0.319  # ...its paragraph neighbours at 3 % (injections come in blocks)
    question_instruction_threshold: float = 0.637  # no ordinary tuning question refused; held-out recall .92

    # Generation: "local" (SmolLM2 via transformers), "extractive" (no LLM), "openai" (HTTP server).
    generator: str = "local"
    max_new_tokens: int = 80
    repetition_penalty: float = 1.15
    openai_base_url: str = "http://127.0.0.1:8000/v1"
    openai_model: str = "default"

    disclaimer: str = (
        "This assistant only repeats what its documents say, with sources. "
        "It is not medical advice: ask your care team about your own situation."
    )

    def replace(self, **changes) -> "Settings":
        """Copy with changes; `None` values mean "not given" and are ignored."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def _coerce(kind, raw):
    if kind in (Path, "Path"):
        return Path(raw).expanduser()
    if kind in (int, "int"):
        return int(raw)
    if kind in (float, "float"):
        return float(raw)
    return str(raw)


def load_settings(config_file: Path | None = None, **overrides) -> Settings:
    """Build Settings from an optional TOML file, the environment and explicit overrides."""
    values: dict = {}
    config_file = config_file or os.environ.get("CHATBOT_CONFIG")
    if config_file:
        with open(config_file, "rb") as fh:
            values.update(tomllib.load(fh))
    for f in fields(Settings):
        env = os.environ.get(f"CHATBOT_{f.name.upper()}")
        if env is not None:
            values[f.name] = env
    known = {f.name: f.type for f in fields(Settings)}
    values.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(values) - set(known)
    if unknown:
        raise ValueError(f"unknown setting(s) {sorted(unknown)}; known: {sorted(known)}")
    return Settings().replace(**{k: _coerce(known[k], v) for k, v in values.items()})
