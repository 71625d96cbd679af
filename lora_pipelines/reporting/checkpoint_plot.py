"""The small plot on trained_lora: each checkpoint's likeness by training step, the published one marked."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure

from lora_pipelines.reporting.plots import _png


def plot_checkpoint_likeness(points: Sequence[tuple[int, float | None, int]], chosen_step: int,
                             reference: str | None) -> bytes:
    """points: (step, likeness or None, near copies). A PNG of 480 x 270 pixels."""
    fig = Figure(figsize=(4.8, 2.7), dpi=100)
    ax = fig.add_subplot()
    scored = [(step, value, copies) for step, value, copies in points if value is not None]
    if not scored:
        ax.text(0.5, 0.5, "no checkpoint scored", ha="center", va="center", transform=ax.transAxes, color="gray")
        ax.set_xticks([])
        ax.set_yticks([])
    else:
        steps, values = [s for s, _, _ in scored], [v for _, v, _ in scored]
        ax.plot(steps, values, marker="o", color="tab:blue")
        for step, value, copies in scored:
            if copies:
                ax.annotate(f"{copies} near-cop{'y' if copies == 1 else 'ies'}", (step, value), fontsize=7,
                            textcoords="offset points", xytext=(0, -12), ha="center", color="tab:red")
        best = next(((s, v) for s, v, _ in scored if s == chosen_step), None)
        if best is not None:
            ax.plot([best[0]], [best[1]], marker="*", markersize=14, color="tab:orange", label="published")
            ax.legend(loc="lower right", fontsize=7)
        ax.set_xticks(steps)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    ax.set_xlabel("training step", fontsize=8)
    ax.set_ylabel("likeness (FaceSim)", fontsize=8)
    ax.set_title("Checkpoint likeness" + (f" vs {reference}" if reference else ""), fontsize=8)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    return _png(fig)
