"""A report folder: PNG figures plus an ``index.html`` that shows them with the tables.

``Report`` collects figures (saved at once as PNG) and text sections, then ``write()`` produces a
self-contained folder that any browser opens (no JavaScript, no external assets).
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Report"]

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
img { max-width: 100%; border: 1px solid #eee; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
table { border-collapse: collapse; } td, th { padding: 0.2em 0.8em; border-bottom: 1px solid #eee; }
.note { color: #555; font-size: 0.9em; }
"""


@dataclass
class Report:
    """Build a report in ``folder``: ``add_figure``, ``add_text``, ``add_table``, then ``write``."""

    folder: str | os.PathLike
    title: str = "mgplvm report"
    sections: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        self.folder.mkdir(parents=True, exist_ok=True)

    def add_figure(self, name: str, fig, heading: str, caption: str = "") -> Path:
        """Save ``fig`` as ``<name>.png`` and add it under ``heading``; closes the figure."""
        import matplotlib.pyplot as plt

        path = self.folder / f"{name}.png"
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        body = f'<img src="{html.escape(path.name)}" alt="{html.escape(heading)}">'
        if caption:
            body += f'<p class="note">{html.escape(caption)}</p>'
        self.sections.append((heading, body))
        return path

    def add_text(self, heading: str, text: str, preformatted: bool = False) -> None:
        """A section of prose (paragraphs split on blank lines) or of preformatted text."""
        if preformatted:
            body = f"<pre>{html.escape(text)}</pre>"
        else:
            body = "".join(f"<p>{html.escape(p)}</p>" for p in text.split("\n\n") if p.strip())
        self.sections.append((heading, body))

    def add_table(self, heading: str, rows: list[dict[str, object]]) -> None:
        """A table from a list of dicts sharing keys."""
        if not rows:
            return
        keys = list(rows[0])
        head = "".join(f"<th>{html.escape(str(k))}</th>" for k in keys)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(k)))}</td>" for k in keys) + "</tr>"
            for r in rows
        )
        self.sections.append((heading, f"<table><tr>{head}</tr>{body}</table>"))

    def write(self) -> Path:
        """Write ``index.html`` and return its path."""
        parts = [
            "<!DOCTYPE html><html><head><meta charset='utf-8'>",
            f"<title>{html.escape(self.title)}</title><style>{_CSS}</style></head><body>",
            f"<h1>{html.escape(self.title)}</h1>",
        ]
        for heading, body in self.sections:
            parts.append(f"<h2>{html.escape(heading)}</h2>{body}")
        parts.append("</body></html>")
        index = self.folder / "index.html"
        index.write_text("\n".join(parts), encoding="utf-8")
        return index


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)
