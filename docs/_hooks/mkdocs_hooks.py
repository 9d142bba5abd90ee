"""mkdocs hooks (``hooks:`` in ``mkdocs.yml``): pages that stay in sync with the code.

* ``<!-- tutorial: tutorials/NAME.py -->`` in a page is replaced by that jupytext percent script
  rendered as Markdown (markdown cells as text, code cells as Python code blocks), read with
  jupytext at build time — the tutorial pages can never drift from the scripts that CI runs.
* ``<!-- mgplvm-help: COMMAND -->`` is replaced by the ``--help`` text of ``mgplvm COMMAND``
  (``<!-- mgplvm-help -->``: of ``mgplvm`` itself), taken from :func:`mgplvm.cli.build_parser`.
* ``<!-- fault-table: tests/test_faults*.py -->`` is replaced by a table of the fault-injection
  cases of those test files: the two strings of each ``@pytest.mark.fault(tried, behaviour)``
  and the test's name (read with ``ast``; nothing is imported or run).

Paths are relative to the directory of ``mkdocs.yml`` (the repository root).
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

_TUTORIAL = re.compile(r"^<!--\s*tutorial:\s*(\S+)\s*-->\s*$", re.MULTILINE)
_FAULTS = re.compile(r"^<!--\s*fault-table:\s*(\S+)\s*-->\s*$", re.MULTILINE)
_HELP = re.compile(r"^<!--\s*mgplvm-help(?::\s*([\w-]+))?\s*-->\s*$", re.MULTILINE)


def _root(config) -> Path:
    return Path(config["config_file_path"]).resolve().parent


def tutorial_markdown(path: Path) -> str:
    """A jupytext percent script as Markdown: text cells verbatim, code cells fenced."""
    import jupytext

    nb = jupytext.read(path, fmt="py:percent")
    parts = []
    for cell in nb.cells:
        src = cell.source.strip("\n")
        if not src.strip():
            continue
        if cell.cell_type == "markdown":
            parts.append(src)
        elif cell.cell_type == "code":
            parts.append(f"```python\n{src}\n```")
    return "\n\n".join(parts) + "\n"


def cli_help(command: str | None) -> str:
    """``mgplvm [COMMAND] --help`` as printed in a 100-column terminal."""
    from mgplvm.cli import build_parser

    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "100"
    try:
        parser = build_parser()
        if command is not None:
            subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
            choices = subs[0].choices if subs else {}
            if command not in choices:
                raise KeyError(f"mgplvm has no command {command!r} (have {sorted(choices)})")
            parser = choices[command]
        return parser.format_help().rstrip()
    finally:
        if old is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = old


def fault_cases(path: Path) -> list[tuple[str, str, str]]:
    """``(tried, behaviour, test name)`` of every ``@pytest.mark.fault`` in a test file."""
    import ast

    cases = []
    for node in ast.parse(path.read_text()).body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for dec in node.decorator_list:
            if (isinstance(dec, ast.Call) and isinstance(dec.func, ast.Attribute)
                    and dec.func.attr == "fault" and len(dec.args) == 2
                    and all(isinstance(a, ast.Constant) for a in dec.args)):
                cases.append((dec.args[0].value, dec.args[1].value, node.name))
    return cases


def fault_table(root: Path, pattern: str) -> str:
    rows = ["| input or fault tried | what happens | test |", "|---|---|---|"]
    paths = sorted(root.glob(pattern))
    if not paths:
        raise FileNotFoundError(f"no test files match {pattern}")
    for path in paths:
        for tried, behaviour, name in fault_cases(path):
            cells = (c.replace("|", "\\|") for c in (tried, behaviour))
            rows.append("| " + " | ".join(cells) + f" | `{path.name}::{name}` |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, page, config, files) -> str:
    root = _root(config)

    def tutorial(m: re.Match) -> str:
        path = root / m.group(1)
        if not path.is_file():
            raise FileNotFoundError(f"{page.file.src_uri}: no tutorial script {m.group(1)}")
        return tutorial_markdown(path)

    def helptext(m: re.Match) -> str:
        return f"```text\n{cli_help(m.group(1))}\n```"

    markdown = _TUTORIAL.sub(tutorial, markdown)
    markdown = _FAULTS.sub(lambda m: fault_table(root, m.group(1)), markdown)
    return _HELP.sub(helptext, markdown)
