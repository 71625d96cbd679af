"""Metadata helpers shared by the assets: string tables and inline image previews."""

import base64

import dagster as dg


def string_table(rows: list[dict], columns: list[str]) -> dg.TableMetadataValue:
    schema = dg.TableSchema(columns=[dg.TableColumn(c, "string") for c in columns])
    records = [dg.TableRecord({c: "" if r.get(c) is None else str(r.get(c)) for c in columns}) for r in rows]
    return dg.MetadataValue.table(records, schema=schema)


def image_md(jpeg: bytes | None, alt: str) -> dg.MarkdownMetadataValue:
    """There is no image metadata type: an inline data-URI thumbnail in Markdown shows in the UI."""
    if jpeg is None:
        return dg.MetadataValue.md(f"_no {alt}_")
    return dg.MetadataValue.md(f"![{alt}](data:image/jpeg;base64,{base64.b64encode(jpeg).decode()})")
