"""The docs match the code: every Python snippet compiles and imports only names that exist.

Snippets are the fenced ``python`` blocks of README.md and docs/*.md. Each must be valid
Python (top-level ``await`` / ``async with`` allowed, as in an async REPL), and every
``from resumable_streams... import name`` in it must name something the package exports, so
the docs never show an API that raises ``ImportError`` or ``AttributeError``. The API
reference must be fresh (``python scripts/api_docs.py``).
"""

from __future__ import annotations

import ast
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)


def snippets() -> list[tuple[str, str]]:
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for number, match in enumerate(BLOCK.finditer(text), 1):
            found.append((f"{page.relative_to(ROOT)}#{number}", match.group(1)))
    return found


SNIPPETS = snippets()


def test_there_are_snippets() -> None:
    assert len(SNIPPETS) >= 10


@pytest.mark.parametrize(("where", "code"), SNIPPETS, ids=[w for w, _ in SNIPPETS])
def test_snippet_compiles_and_imports_exist(where: str, code: str) -> None:
    tree = compile(code, where, "exec", flags=ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    assert isinstance(tree, ast.Module)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("resumable_streams"):
            module = importlib.import_module(node.module or "")
            for alias in node.names:
                assert hasattr(module, alias.name), (
                    f"{where}: `from {node.module} import {alias.name}`: no such name"
                )
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("resumable_streams"):
                    importlib.import_module(alias.name)


def test_api_reference_is_fresh() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "api_docs.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
