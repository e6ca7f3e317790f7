"""The report's tiny document model: headings, paragraphs, tables, images and links, rendered to
both Markdown (report.md) and a static HTML page (index.html) with inline styles."""

from __future__ import annotations

import html
from typing import Any


class Doc:
    """Headings, paragraphs, tables and images, rendered to both Markdown and HTML."""

    def __init__(self) -> None:
        self.blocks: list[tuple[str, Any]] = []

    def heading(self, level: int, text: str) -> None:
        self.blocks.append(("h", (level, text)))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def table(self, headers: list[str], rows: list[list[Any]]) -> None:
        if rows:
            self.blocks.append(("table", (headers, [[fmt(c) for c in row] for row in rows])))

    def image(self, name: str, alt: str) -> None:
        self.blocks.append(("img", (name, alt)))

    def link(self, href: str, text: str, after: str = "") -> None:
        """A paragraph that opens with a link to a local file."""
        self.blocks.append(("a", (href, text, after)))

    def markdown(self) -> str:
        out = []
        for kind, value in self.blocks:
            if kind == "h":
                out.append("#" * value[0] + " " + value[1])
            elif kind == "p":
                out.append(value)
            elif kind == "table":
                headers, rows = value
                cells = [headers, ["---"] * len(headers), *rows]
                out.append(
                    "\n".join("| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in cells)
                )
            elif kind == "a":
                out.append(f"[{value[1]}]({value[0]}){value[2]}")
            else:
                out.append(f"![{value[1]}]({value[0]})")
        return "\n\n".join(out) + "\n"

    def html(self, title: str) -> str:
        e = html.escape
        body = []
        for kind, value in self.blocks:
            if kind == "h":
                body.append(f"<h{value[0]}>{e(value[1])}</h{value[0]}>")
            elif kind == "p":
                body.append(f"<p>{e(value)}</p>")
            elif kind == "table":
                headers, rows = value
                head = "".join(f"<th>{e(h)}</th>" for h in headers)
                trs = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows)
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{trs}</tbody></table>")
            elif kind == "a":
                body.append(f'<p><a href="{e(value[0])}"><b>{e(value[1])}</b></a>{e(value[2])}</p>')
            else:
                body.append(f'<figure><img src="{e(value[0])}" alt="{e(value[1])}"></figure>')
        return PAGE.format(title=e(title), body="\n".join(body))


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; }}
h1 {{ border-bottom: 2px solid #2e7d32; padding-bottom: .2em; }}
h2 {{ margin-top: 2em; border-bottom: 1px solid #ddd; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 14px; }}
th, td {{ border: 1px solid #ccc; padding: 4px 10px; text-align: right; }}
th {{ background: #f3f3f3; }} td:first-child, th:first-child {{ text-align: left; }}
img {{ max-width: 100%; }} figure {{ margin: 1em 0; }}
</style></head>
<body>
{body}
</body></html>
"""


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:.0f}"
        return f"{value:.3f}".rstrip("0").rstrip(".") if value else "0"
    return str(value)
