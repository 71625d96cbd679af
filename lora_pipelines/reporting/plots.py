"""The report's plots: PNG bytes from matplotlib's Agg canvas (no pyplot, no global state), and thumbnails."""

from __future__ import annotations

import base64
import io
from typing import Any

import pandas as pd
from matplotlib.figure import Figure

from lora_pipelines.reporting import tables as report_tables
from lora_pipelines.reporting.queries import UNKNOWN
from lora_pipelines.reporting.tables import worst_characters

PLOT_SIZE = (8.0, 4.5)  # inches at 100 dpi: 800x450 px
PLOT_DPI = 100
THUMBNAIL_SIZE = (320, 180)


def _figure() -> tuple[Figure, Any]:
    fig = Figure(figsize=PLOT_SIZE, dpi=PLOT_DPI)  # no pyplot: Agg canvas, no global state
    return fig, fig.add_subplot()


def _png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=PLOT_DPI, metadata={"Software": None})  # no version stamp: same bytes
    return buffer.getvalue()


def _empty(ax: Any, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="gray")
    ax.set_xticks([])
    ax.set_yticks([])


def plot_trend(by_day: pd.DataFrame) -> bytes:
    fig, ax = _figure()
    days = by_day[by_day["day"] != UNKNOWN]
    if days.empty:
        _empty(ax, "no finished jobs in the window")
    else:
        x = range(len(days))
        labels = {
            "lora_usage_rate": "LoRA usage", "face_match_rate_with_lora": "face match with LoRA",
            "face_match_rate_without_lora": "face match without LoRA", "generation_success_rate": "success",
            "fallback_success_rate": "fallback success",
        }  # fmt: skip
        for column, label in labels.items():
            ax.plot(x, days[column] * 100, marker="o", label=label)
        ax.set_xticks(list(x), list(days["day"]), rotation=30, ha="right")
        ax.set_ylim(-5, 105)
        ax.set_ylabel("%")
        ax.grid(alpha=0.3)
        ax.legend(loc="lower left", fontsize=8)
    ax.set_title("Daily quality")
    fig.tight_layout()
    return _png(fig)


def plot_face_match_by_character(by_character: pd.DataFrame, limit: int | None = None) -> bytes:
    """Bars per scored character; beyond `limit` (default SHOWN_CHARACTERS) only the worst ones, worst first."""
    limit = report_tables.SHOWN_CHARACTERS if limit is None else limit
    fig, ax = _figure()
    scored = by_character[(by_character["scored_with_lora"] + by_character["scored_without_lora"]) > 0]
    title = "Face match by character"
    if len(scored) > limit:
        title += f" (worst {limit} of {len(scored):,})"
        scored = worst_characters(scored).head(limit)
    if scored.empty:
        _empty(ax, "no scored generations in the window")
    else:
        x = list(range(len(scored)))
        width = 0.4
        for offset, column, label in ((-width / 2, "face_match_rate_with_lora", "with LoRA"),
                                      (width / 2, "face_match_rate_without_lora", "without LoRA")):
            ax.bar([i + offset for i in x], scored[column].fillna(0) * 100, width, label=label)
        ax.axhline(95, color="red", linewidth=1, linestyle="--", label="target 95%")
        names = [f"{n[:14]} ({c})" for c, n in zip(scored["character_id"], scored["character"], strict=True)]
        ax.set_xticks(x, names, rotation=30, ha="right", fontsize=8)
        ax.set_ylim(0, 105)
        ax.set_ylabel("face match %")
        ax.legend(loc="lower left", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    return _png(fig)


def plot_training_durations(durations: pd.DataFrame) -> bytes:
    fig, ax = _figure()
    if durations.empty:
        _empty(ax, "no finished trainings in the window")
    else:
        groups = sorted(durations["base_model"].unique())
        ax.boxplot([durations.loc[durations["base_model"] == g, "minutes"] for g in groups], tick_labels=groups)
        ax.set_ylabel("minutes")
        ax.set_ylim(bottom=0)
        ax.grid(axis="y", alpha=0.3)
    ax.set_title("LoRA training duration by base model")
    fig.tight_layout()
    return _png(fig)


def thumbnail(png: bytes, size: tuple[int, int] = THUMBNAIL_SIZE) -> bytes:
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        small = image.convert("RGB")
        small.thumbnail(size)
        buffer = io.BytesIO()
        small.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")

