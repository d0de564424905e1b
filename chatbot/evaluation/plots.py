"""The evaluation's PNG plots (matplotlib, imported only when plotting)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from chatbot.config import Settings


# -- report --------------------------------------------------------------------------------------

def plot(rows: Sequence[dict], settings: Settings, out: Path, retrieval_only: bool) -> list[Path]:
    """PNG plots: top retrieval score by answerability against the refusal threshold; and, with
    answers, each answer's mean support score against the support threshold, and latency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(7, 4))
    groups = [("answerable", [r["metrics"]["top_dense"] for r in rows if r["answerable"]]),
              ("unanswerable", [r["metrics"]["top_dense"] for r in rows if not r["answerable"]])]
    bins = np.linspace(min([0.0, *[v for _, vs in groups for v in vs]]), 1.0, 26)
    for label, values in groups:
        ax.hist(values, bins=bins, alpha=0.6, label=f"{label} ({len(values)})")
    ax.axvline(settings.min_score, color="k", linestyle="--",
               label=f"refusal threshold {settings.min_score}")
    ax.set(xlabel="best dense (cosine) score of the retrieved passages", ylabel="questions",
           title="Retrieval score: answerable vs unanswerable")
    ax.legend()
    paths.append(_save(fig, out / "retrieval_scores.png"))
    if retrieval_only:
        return paths

    answered = [r for r in rows if not r["metrics"]["refused"]]
    ids = [r["id"] for r in answered]
    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(max(7, 0.25 * len(answered)), 6))
    colors = ["tab:green" if r["metrics"]["citation_recall"] == 1.0 else "tab:red"
              for r in answered]
    top.bar(ids, [r["metrics"]["support_score"] for r in answered], color=colors)
    top.axhline(settings.support_threshold, color="k", linestyle="--",
                label=f"support threshold {settings.support_threshold}")
    top.set(ylabel="mean support score", ylim=(0, 1.05),
            title="Per-question support of the answer (red: a sentence is unsupported)")
    top.legend(loc="lower right")
    kept = [r["metrics"]["kept_claims"] for r in answered]
    bottom.bar(ids, kept, color="tab:green", label="kept (incl. quoted passages)")
    bottom.bar(ids, [r["metrics"]["dropped_claims"] for r in answered], bottom=kept,
               color="tab:gray", label="dropped as unsupported")
    bottom.set(ylabel="draft sentences")
    bottom.tick_params(axis="x", labelrotation=90, labelsize=7)
    bottom.legend(loc="upper right")
    paths.append(_save(fig, out / "support.png"))

    fig, ax = plt.subplots(figsize=(7, 4))
    ax.hist([r["latency_ms"] / 1000 for r in rows], bins=20)
    ax.set(xlabel="seconds per question", ylabel="questions", title="Latency")
    paths.append(_save(fig, out / "latency.png"))
    return paths


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
