"""One self-contained HTML report (PNGs inlined as base64) and its tables."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path


def table_html(header: list[str], rows: list[list[object]]) -> str:
    def cell(v: object) -> str:
        return html.escape(f"{v:.3g}" if isinstance(v, float) else str(v))

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def metadata_html(meta: dict) -> str:
    """What was run (studies/metadata.describe) as a two-column table."""
    rows = [[k, v if isinstance(v, str) else json.dumps(v, sort_keys=True)] for k, v in meta.items()]
    return table_html(["", ""], rows).replace("<table>", "<table class='meta'>", 1)


def write_html(
    path: Path, title: str, sections: list[tuple[str, str]], images: list[Path], meta: dict | None = None
) -> None:
    """sections: (heading, HTML body), after "What was run" (the metadata) when given; images are inlined so the
    file stands alone."""
    if meta is not None:
        sections = [("What was run", metadata_html(meta)), *sections]
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;max-width:1150px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}table.meta td{text-align:left}"
        "img{max-width:100%}</style></head>",
        f"<body><h1>{html.escape(title)}</h1>",
    ]
    for heading, body in sections:
        parts.append(f"<h2>{html.escape(heading)}</h2>{body}")
    for img in images:
        data = base64.b64encode(img.read_bytes()).decode()
        parts.append(f"<h3>{html.escape(img.stem.replace('_', ' '))}</h3><img src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(parts))
    tmp.replace(path)
