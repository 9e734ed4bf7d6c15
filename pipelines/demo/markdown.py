"""Markdown for the reports, and just enough Markdown -> HTML to show them without a dependency.

:func:`markdown_table` writes a DataFrame as a GitHub-flavoured table; :func:`markdown_to_html`
turns the report's own Markdown (headings, tables, images, bullets, bold, links; lines that start
with ``<`` pass through as HTML) into one HTML page.
"""

from __future__ import annotations

import html
import re
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["markdown_table", "markdown_to_html"]

_STYLE = (
    "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
    "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "td:first-child,th:first-child{text-align:left}img{max-width:100%}</style>"
)


def markdown_table(df: pd.DataFrame, *, floatfmt: str = "{:.3f}", index_name: str = "") -> str:
    """A DataFrame as a GitHub-flavoured Markdown table (no extra dependency).

    Parameters
    ----------
    df
        The table; its index becomes the first column.
    floatfmt
        Format of float cells (non-finite ones show as ``–``).
    index_name
        Header of the index column.

    Returns
    -------
    str
        The table's lines, joined by newlines.
    """

    def fmt(v: Any) -> str:
        if isinstance(v, (float, np.floating)):
            return "–" if not np.isfinite(v) else floatfmt.format(v)
        return str(v)

    cols = [index_name] + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(["---"] * len(cols)) + "|"]
    for idx, row in df.iterrows():
        lines.append("| " + " | ".join([str(idx)] + [fmt(v) for v in row.values]) + " |")
    return "\n".join(lines)


_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


def _inline(text: str) -> str:
    """Escaped text with ``**bold**`` as ``<b>`` and ``[text](href)`` as a link."""
    parts = html.escape(text, quote=False).split("**")
    out = "".join(f"<b>{p}</b>" if k % 2 else p for k, p in enumerate(parts))
    return _LINK.sub(lambda m: f"<a href='{html.escape(m[2])}'>{m[1]}</a>", out)


def _html_table(rows: list[str]) -> list[str]:
    """Markdown table lines (header, rule, rows) as HTML lines."""
    cells = [
        [html.escape(c.strip()) for c in r.strip("|").split("|")] for r in rows if not r.startswith("|---")
    ]
    out = ["<table><tr>" + "".join(f"<th>{c}</th>" for c in cells[0]) + "</tr>"]
    out += ["<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in cells[1:]]
    out.append("</table>")
    return out


def _html_line(line: str) -> str | None:
    """One non-table Markdown line as HTML (``None`` for a blank line)."""
    if line.startswith("#"):
        level = len(line) - len(line.lstrip("#"))
        return f"<h{level}>{html.escape(line.lstrip('# '))}</h{level}>"
    if line.startswith("!["):
        alt, src = line[2:].split("](")
        return f"<p><img alt='{html.escape(alt)}' src='{html.escape(src.rstrip(')'))}'></p>"
    if line.startswith("<"):  # raw HTML a section wrote (a folded table, an embedded map)
        return line
    if line.startswith("- "):
        return f"<li>{_inline(line[2:])}</li>"
    if line.strip():
        return f"<p>{_inline(line)}</p>"
    return None


def markdown_to_html(md: str, *, title: str = "harmonize demo report") -> str:
    """Just enough Markdown -> HTML for the report (headings, tables, images, bullets, bold).

    Parameters
    ----------
    md
        The report's Markdown.
    title
        The page's title.

    Returns
    -------
    str
        A standalone HTML page.
    """
    out = [f"<!doctype html><meta charset='utf-8'><title>{title}</title>", _STYLE]
    lines = md.splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("|"):
            rows = []
            while i < len(lines) and lines[i].startswith("|"):
                rows.append(lines[i])
                i += 1
            out += _html_table(rows)
            continue
        converted = _html_line(lines[i])
        if converted is not None:
            out.append(converted)
        i += 1
    return "\n".join(out)
