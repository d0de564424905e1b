"""The benchmark's JSON object as a readable table (measuring is in measure.py)."""
from __future__ import annotations

# (field, label, unit), in the order a reader follows the flow: ingest, search, LLM, answers.
ROWS = (
    ("n_chunks", "chunks indexed", ""),
    ("ingest_chunks_per_s", "ingest (read, parse, chunk, embed, index)", "chunks/s"),
    ("embed_only_chunks_per_s", "embedder alone, same texts", "chunks/s"),
    ("ingest_vs_embed_only", "ingest / embedder alone", "×"),
    ("index_build_s", "re-index from cached vectors", "s"),
    ("retrieval_p50_ms", "retrieval p50 (question embedding included)", "ms"),
    ("retrieval_p95_ms", "retrieval p95", "ms"),
    ("cold_start_s", "cold start: `ask` to first answer, empty caches", "s"),
    ("warm_start_s", "warm start: `ask` to first answer", "s"),
    ("warm_ready_s", "warm start: to the pipeline loaded", "s"),
    ("llm_ttft_s", "LLM first token", "s"),
    ("llm_prefill_tok_s", "LLM prefill", "tok/s"),
    ("llm_decode_tok_s", "LLM decode", "tok/s"),
    ("llm_guessed_share", "LLM decode: share of tokens guessed from the prompt", ""),
    ("llm_decode_passes_per_s", "LLM decode: passes over the weights", "/s"),
    ("llm_model_bytes", "LLM weights read per token", "MB"),
    ("mem_bandwidth_gbs", "memory bandwidth (numpy copy)", "GB/s"),
    ("decode_bound_tok_s", "decode bound (bandwidth / weights)", "tok/s"),
    ("decode_vs_bound", "decode / bound", "×"),
    ("answer_p50_s", "answer p50 (retrieve, check, draft, ground)", "s"),
    ("serve_rss_mb", "serving process RSS after answering", "MB"),
    ("ingest_peak_rss_mb", "ingest process peak RSS", "MB"),
    ("peak_rss_mb", "benchmark process peak RSS", "MB"),
)


def _value(field: str, value) -> str:
    if value is None:
        return "–"
    if field == "llm_model_bytes":
        return f"{value / 1e6:,.0f}"
    if isinstance(value, float) and abs(value) < 100:
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return f"{value:,.0f}" if isinstance(value, (int, float)) else str(value)


def table(result: dict) -> str:
    """Aligned rows of label, value, unit, then one line on the machine."""
    rows = [(label, _value(field, result.get(field)), unit) for field, label, unit in ROWS]
    width = max(len(label) for label, _, _ in rows)
    vwidth = max(len(v) for _, v, _ in rows)
    lines = [f"{label:<{width}}  {v:>{vwidth}} {unit}".rstrip() for label, v, unit in rows]
    m = result.get("machine", {})
    lines.append(f"machine: {m.get('cores')} cores ({m.get('cpu')}), load "
                 f"{m.get('load_average')} -> {result.get('load_average_after')}, generator "
                 f"{result.get('generator')}, {result.get('date')}")
    return "\n".join(lines)
