"""The benchmark's figures that need a process of their own, as a user meets them: a fresh
`python -m chatbot ask` timed from its start to the first byte of its answer; a process that
loads the models and the index and answers questions (serving), whose resident memory is read
at the end; and ingest, which embeds with torch as `python -m chatbot ingest` does."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from chatbot.config import Settings

_TIMEOUT_S = 900  # a cold start converts the LLM and may build the index: minutes at worst


def _env(cache_dir: Path) -> dict:
    return {**os.environ, "CHATBOT_CACHE_DIR": str(cache_dir)}


def time_ask(settings: Settings, index_dir: Path, cache_dir: Path, question: str,
             config: Path | None) -> float:
    """Seconds from starting `python -m chatbot ask` to the first byte it prints (the answer)."""
    return _first_byte([sys.executable, "-m", "chatbot", "ask", "--corpus",
                        str(settings.corpus_dir), "--index", str(index_dir),
                        *(["--config", str(config)] if config else []), question], cache_dir)


def time_ready(settings: Settings, index_dir: Path, cache_dir: Path, config: Path | None) -> float:
    """Seconds from starting a process to the moment its pipeline can answer (imports, embedder,
    index and LLM loaded), as `ask` and `serve` load it."""
    return _first_byte([sys.executable, "-m", "chatbot.benchmark.probe", "--ready", "--corpus",
                        str(settings.corpus_dir), "--index", str(index_dir),
                        *(["--config", str(config)] if config else [])], cache_dir)


def _first_byte(cmd: list[str], cache_dir: Path) -> float:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=_env(cache_dir))
    first = proc.stdout.read(1)
    seconds = time.perf_counter() - t0
    out, err = proc.communicate(timeout=_TIMEOUT_S)
    if proc.returncode != 0 or not first:
        raise RuntimeError(f"`{' '.join(cmd[1:5])} ...` failed ({proc.returncode}): "
                           f"{err.decode(errors='replace').strip().splitlines()[-1:]}")
    return seconds


def starts(settings: Settings, built_index: Path, work: Path, question: str, repeats: int,
           config: Path | None, n_chunks: int) -> dict:
    """cold_start_s: empty model cache (the LLM is converted, where the generator needs it) and,
    when `ask` would build it itself (up to auto_update_max_chunks), an empty index folder;
    warm_start_s: the same process again with the model cache and the index in place, the
    median of `repeats` (the first warm run is a warm-up: it fills the OS page cache);
    warm_ready_s: the same, to the moment the pipeline is loaded (the rest is the answer)."""
    cache = work / "model-cache"
    builds = n_chunks <= settings.auto_update_max_chunks
    cold_index = work / "cold-index" if builds else built_index
    cold = time_ask(settings, cold_index, cache, question, config)
    time_ask(settings, built_index, cache, question, config)
    warm = [time_ask(settings, built_index, cache, question, config) for _ in range(repeats)]
    ready = [time_ready(settings, built_index, cache, config) for _ in range(repeats)]
    return {"cold_start_s": round(cold, 2), "cold_start_builds_index": builds,
            "warm_start_s": round(statistics.median(warm), 2),
            "warm_ready_s": round(statistics.median(ready), 2)}


def _child(module: str, config: Path | None, *args: str) -> dict:
    """Run `python -m module args` and return the JSON object its last line prints."""
    cmd = [sys.executable, "-m", module, *args, *(["--config", str(config)] if config else [])]
    done = subprocess.run(cmd, capture_output=True, timeout=_TIMEOUT_S, env=os.environ)
    if done.returncode != 0:
        raise RuntimeError(f"{module} failed: "
                           f"{done.stderr.decode(errors='replace').strip().splitlines()[-1:]}")
    return json.loads(done.stdout.decode().strip().splitlines()[-1])


def ingest(settings: Settings, work: Path, repeats: int, config: Path | None) -> dict:
    """Whole ingests and the embedder alone (chatbot.benchmark.bulk), in a process of their own."""
    return _child("chatbot.benchmark.bulk", config, "--corpus", str(settings.corpus_dir),
                  "--work", str(work), "--repeats", str(repeats))


def serve_memory(settings: Settings, index_dir: Path, questions: list[str],
                 config: Path | None) -> dict:
    """Resident and peak memory of a fresh process that loads the pipeline (models + index, as
    `serve` does, without the web page) and answers the questions."""
    return _child("chatbot.benchmark.probe", config, "--corpus", str(settings.corpus_dir),
                  "--index", str(index_dir), *questions)
