"""Griffe extension: render the reST-isms of mgplvm's docstrings as Markdown.

mgplvm's docstrings are Google style, with a few reStructuredText habits that Markdown shows
literally. Before mkdocstrings parses a docstring this extension rewrites

* Sphinx roles ``:func:`~mgplvm.fitting.fit``` -> inline code ``fit`` (``~`` keeps the last part);
* a paragraph ending in ``::`` (reST literal block) -> ``:`` (the indented block that follows is
  a Markdown code block already);
* reST simple tables (``====  ====`` borders) -> Markdown pipe tables.

Only the docstrings seen by the docs build are changed; the source files are untouched.
Configured in ``mkdocs.yml`` (``plugins: mkdocstrings: handlers: python: options: extensions``).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|data|attr|obj|exc|const|ref):`(~?)([^`]+)`")
_BORDER = re.compile(r"^(\s*)(=+)(\s+=+)+\s*$")


def _role(match: re.Match) -> str:
    tilde, target = match.groups()
    target = target.strip()
    if "<" in target and target.endswith(">"):  # :ref:`text <target>`
        target = target.split("<", 1)[0].strip()
    else:
        target = re.sub(r"\s+", "", target)  # a dotted path wrapped over two lines
    if tilde:
        target = target.rsplit(".", 1)[-1]
    return f"`{target}`"


def _columns(border: str) -> list[tuple[int, int]]:
    return [(m.start(), m.end()) for m in re.finditer(r"=+", border)]


def _split_row(line: str, cols: list[tuple[int, int]]) -> list[str]:
    cells = []
    for i, (start, _) in enumerate(cols):
        end = cols[i + 1][0] if i + 1 < len(cols) else None
        cells.append(line[start:end].strip() if end is not None else line[start:].strip())
    return cells


def _table(lines: list[str], indent: str) -> list[str]:
    """A reST simple table (border lines included) -> Markdown table lines."""
    cols = _columns(lines[0])
    borders = [i for i, ln in enumerate(lines) if _BORDER.match(ln)]
    header: list[str] | None = None
    body_start = 1
    if len(borders) >= 3:  # top border, header, separator, body, bottom border
        head_rows = [_split_row(ln, cols) for ln in lines[1:borders[1]] if ln.strip()]
        header = [" ".join(c for c in col if c) for col in zip(*head_rows, strict=True)]
        body_start = borders[1] + 1
    rows: list[list[str]] = []
    for ln in lines[body_start:borders[-1]]:
        if not ln.strip():
            continue
        cells = _split_row(ln, cols)
        if rows and not cells[0]:  # continuation line: first column empty
            rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], cells, strict=True)]
        else:
            rows.append(cells)
    if header is None:
        header = [""] * len(cols)

    def fmt(cells: list[str]) -> str:
        return indent + "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return ["", fmt(header), indent + "|" + "---|" * len(cols), *map(fmt, rows), ""]


def convert(text: str) -> str:
    """Apply the rewrites listed in the module docstring to one docstring."""
    text = _ROLE.sub(_role, text)
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _BORDER.match(line)
        if m:
            # collect up to the closing border: the last border before a blank line / the end
            j = i + 1
            last = None
            while j < len(lines):
                if _BORDER.match(lines[j]):
                    last = j
                    if j + 1 >= len(lines) or not lines[j + 1].strip():
                        break
                j += 1
            if last is not None:
                out.extend(_table(lines[i:last + 1], m.group(1)))
                i = last + 1
                continue
        if line.rstrip().endswith("::") and not line.strip().startswith(".."):
            stripped = line.rstrip()[:-2].rstrip()
            line = stripped + ":" if stripped else ""
        out.append(line)
        i += 1
    return "\n".join(out)


class RstToMarkdown(griffe.Extension):
    """Rewrite every loaded docstring with :func:`convert`."""

    def _fix(self, obj: Any) -> None:
        doc = getattr(obj, "docstring", None)
        if doc is not None and doc.value:
            doc.value = convert(doc.value)

    def on_instance(self, *, node: Any, obj: Any, agent: Any, **kwargs: Any) -> None:
        self._fix(obj)
