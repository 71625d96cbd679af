"""The report's pages: tables as Markdown and HTML, the plots inline in the HTML."""

from __future__ import annotations

import html
from typing import Any

import pandas as pd

from lora_pipelines.reporting import tables as report_tables
from lora_pipelines.reporting.plots import png_data_uri
from lora_pipelines.reporting.tables import RATES, SPLIT, worst_characters

_TABLE_TITLES = {
    "summary": "Headline", "checks": "Checks on generation_outputs", "by_character": "By character",
    "by_base_model": "By base model", "by_backend": "By backend", "by_day": "By day",
    "training": "LoRA training (durations in minutes)", "training_failures": "Top training failure reasons",
    "face_match": "Face match: held-out vs in-sample photos, dlib vs SFace (never mixed)",
    "satisfaction_by_character": "Users' verdict by character (ratings of LoRA generations; rate = share 'better')",
    "satisfaction_by_base_model": "Users' verdict by base model (ratings of LoRA generations; rate = share 'better')",
}  # fmt: skip
_RATE_COLUMNS = {*RATES, *SPLIT, "rate", "target"}


def plain(value: Any) -> Any:
    """A cell as a plain Python value (None for NaN)."""
    if value is None or (isinstance(value, float) and value != value):
        return None
    if hasattr(value, "item"):  # numpy scalar
        return value.item()
    return value


def _cell(column: str, value: Any) -> str:
    value = plain(value)
    if value is None:
        return "n/a"
    if column in _RATE_COLUMNS and isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.1%}"
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _display(table: pd.DataFrame) -> list[list[str]]:
    return [[_cell(c, v) for c, v in row.items()] for row in table.to_dict("records")]


def markdown_table(table: pd.DataFrame) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    header = "| " + " | ".join(esc(str(c)) for c in table.columns) + " |"
    rule = "|" + "|".join("---" for _ in table.columns) + "|"
    body = ["| " + " | ".join(esc(cell) for cell in row) + " |" for row in _display(table)]
    return "\n".join([header, rule, *body]) if body else header + "\n" + rule + "\n\n_(no rows)_"


def shown_rows(name: str, table: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """The rows a page shows of a table, and a note when some are left to the CSV (only by_character is capped)."""
    shown = report_tables.SHOWN_CHARACTERS
    if name != "by_character" or len(table) <= shown:
        return table, ""
    note = (f"Worst {shown} of {len(table):,} characters (lowest face match with LoRA first); "
            f"every character is in {name}.csv.")  # fmt: skip
    return worst_characters(table).head(shown), note


def render_markdown(title: str, window: str, source: str, tables: dict[str, pd.DataFrame], plots: list[str]) -> str:
    parts = [f"# {title}", "", f"Window: {window}. Check results: {source}.", ""]
    parts += [f"![{name}]({name}.png)" for name in plots]
    for name, table in tables.items():
        shown, note = shown_rows(name, table)
        parts += ["", f"## {_TABLE_TITLES.get(name, name)}", "", *([note, ""] if note else [])]
        parts += [markdown_table(shown), "", f"CSV: `{name}.csv`"]
    return "\n".join(parts) + "\n"


def _html_table(table: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in _display(table))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{rows or '<tr><td>(no rows)</td></tr>'}</tbody></table>"


def render_html(title: str, window: str, source: str, tables: dict[str, pd.DataFrame], plots: dict[str, bytes]) -> str:
    style = ("body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:.5em 0}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f3f3f3}"
             "img{max-width:100%;margin:.5em 0}")  # fmt: skip
    images = "".join(
        f'<figure><img alt="{html.escape(n)}" src="{png_data_uri(png)}">'
        f"<figcaption>{html.escape(n)}.png</figcaption></figure>"
        for n, png in plots.items()
    )
    sections = ""
    for name, table in tables.items():
        shown, note = shown_rows(name, table)
        sections += f"<h2>{html.escape(_TABLE_TITLES.get(name, name))}</h2>"
        sections += (f"<p>{html.escape(note)}</p>" if note else "") + _html_table(shown)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title><style>{style}</style>"
        f"</head><body><h1>{html.escape(title)}</h1><p>Window: {html.escape(window)}. Check results: "
        f"{html.escape(source)}.</p>{images}{sections}</body></html>\n"
    )
