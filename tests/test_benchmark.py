"""`python -m chatbot bench` on the seed FAQ with few repeats: every field the issue lists is in
the JSON, with values that make sense together (#12)."""
from __future__ import annotations

import json

import pytest

from chatbot.__main__ import main as cli
from chatbot.benchmark import report

FIELDS = ("ingest_chunks_per_s", "embed_only_chunks_per_s", "index_build_s", "n_chunks",
          "retrieval_p50_ms", "retrieval_p95_ms", "cold_start_s", "warm_start_s", "warm_ready_s",
          "llm_ttft_s",
          "llm_decode_tok_s", "llm_prefill_tok_s", "llm_model_bytes", "mem_bandwidth_gbs",
          "decode_bound_tok_s", "answer_p50_s", "serve_rss_mb", "peak_rss_mb", "machine")


@pytest.mark.slow
def test_bench_writes_every_field_with_sane_values(faq_corpus, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert cli(["bench", "--corpus", str(faq_corpus), "--out", str(out), "--repeats", "1"]) == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    assert not [f for f in FIELDS if result.get(f) is None]
    assert result["n_chunks"] == 11  # the seed FAQ's entries
    for name in FIELDS[:-1]:
        assert result[name] > 0, name
    assert result["retrieval_p50_ms"] <= result["retrieval_p95_ms"] < 60_000
    assert result["warm_start_s"] < 600 and result["cold_start_s"] < 900
    assert result["warm_ready_s"] < result["warm_start_s"]  # loaded before it answers
    assert result["llm_ttft_s"] < result["answer_p50_s"] * 5
    # Qwen2.5-Coder-0.5B Q4_K_M: 0.49 GB of weights; decoding cannot beat the bandwidth bound
    assert 1e8 < result["llm_model_bytes"] < 5e9
    bound = result["mem_bandwidth_gbs"] * 1e9 / result["llm_model_bytes"]
    assert result["decode_bound_tok_s"] == pytest.approx(bound, rel=0.01)
    assert result["llm_decode_tok_s"] < 3 * result["decode_bound_tok_s"]
    assert 0 < result["llm_guessed_share"] < 1  # prompt lookup is on, and not every token
    assert 0 < result["llm_decode_passes_per_s"] < result["llm_decode_tok_s"]
    assert 100 < result["serve_rss_mb"] < 8000 and result["peak_rss_mb"] >= 100
    machine = result["machine"]
    assert machine["cores"] >= 1 and len(machine["load_average"]) == 3
    assert machine["versions"]["numpy"] and machine["python"].startswith("3.")
    printed = capsys.readouterr().out
    assert "retrieval p50" in printed and "decode bound" in printed


def test_the_table_shows_every_row_and_a_dash_for_what_was_not_measured():
    text = report.table({"n_chunks": 11, "retrieval_p50_ms": 12.5, "llm_model_bytes": 538060032,
                         "llm_decode_tok_s": None, "machine": {"cores": 2}})
    lines = text.splitlines()
    assert len(lines) == len(report.ROWS) + 1
    assert any(line.startswith("retrieval p50") and "12.5 ms" in line for line in lines)
    assert any(line.startswith("LLM weights") and "538 MB" in line for line in lines)
    assert any(line.startswith("LLM decode") and "–" in line for line in lines)


def test_the_modules_ask_runs_import_neither_gradio_nor_matplotlib():
    """Start-up (#12): `ask` loads the CLI, the pipeline and its stages, never the web or plot
    libraries (seconds of imports on two cores)."""
    import subprocess
    import sys

    code = ("import sys, chatbot.__main__, chatbot.pipeline, chatbot.generation, chatbot.index; "
            "print(sorted({k.split('.')[0] for k in sys.modules} & "
            "{'gradio', 'matplotlib', 'pandas'}))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
