"""Generate ``docs/api.md``, the API reference, from the public modules' docstrings.

The reference is written from the code, so it cannot drift from it: CI runs this script with
``--check`` and fails when the committed file is stale. Each public module contributes the
names in its ``__all__``: signature and docstring for functions and classes (plus their public
methods and properties), the value for constants::

    python scripts/api_docs.py           # rewrite docs/api.md
    python scripts/api_docs.py --check   # exit 1 if docs/api.md is out of date
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import re
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "api.md"
_ADDRESS = re.compile(r" at 0x[0-9a-f]+>")  # object reprs differ from run to run

# (module, one-line description): the public surface, in reading order. A name exported by
# several modules is documented under the first one.
MODULES = [
    ("resumable_streams", "resumable streams: the context and its iterators"),
    ("resumable_streams.transports", "SSE and WebSocket endpoints and resuming clients"),
    ("resumable_streams.durable", "the Durable Streams client (sync and async)"),
    ("resumable_streams.durable.server", "the Durable Streams server (ASGI app, `serve`)"),
    ("resumable_streams.storage", "Durable Streams storage engines"),
    ("resumable_streams.backends", "pub/sub backends of resumable streams"),
    ("resumable_streams.errors", "the exception tree"),
    ("resumable_streams.testing", "helpers for your own tests"),
]


def _doc(obj: Any) -> str:
    return inspect.cleandoc(obj.__doc__) if obj.__doc__ else "*(no docstring)*"


def _annotation(annotation: Any) -> str:
    # Modules use `from __future__ import annotations`: annotations are already source text.
    return annotation if isinstance(annotation, str) else inspect.formatannotation(annotation)


def _signature(name: str, obj: Any) -> str:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return name
    params = []
    for param in sig.parameters.values():
        if param.annotation is not param.empty:
            param = param.replace(annotation=_Raw(_annotation(param.annotation)))
        if param.default is not param.empty:
            param = param.replace(default=_Raw(_ADDRESS.sub(">", repr(param.default))))
        params.append(param)
    returns = sig.return_annotation
    if returns is not sig.empty:
        returns = _Raw(_annotation(returns))
    return f"{name}{sig.replace(parameters=params, return_annotation=returns)}"


class _Raw:
    """Shows its text as is (no quotes) inside an ``inspect.Signature``."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _members(cls: type) -> list[tuple[str, Any]]:
    """Public methods and properties defined by ``cls`` itself (not inherited)."""
    found = []
    for attr, value in vars(cls).items():
        if attr.startswith("_"):
            continue
        if isinstance(value, property | staticmethod | classmethod) or inspect.isfunction(value):
            found.append((attr, value))
    return found


def _render_member(owner: str, attr: str, value: Any) -> list[str]:
    if isinstance(value, property):
        head = f"`{owner}.{attr}` (property)"
        doc = _doc(value.fget) if value.fget else "*(no docstring)*"
    else:
        func = value.__func__ if isinstance(value, staticmethod | classmethod) else value
        prefix = "async " if inspect.iscoroutinefunction(func) else ""
        head = f"`{prefix}{owner}.{_signature(attr, func)}`"
        doc = _doc(func)
    return [f"- {head}", "", _indent(doc), ""]


def _indent(text: str) -> str:
    return "\n".join(f"  {line}" if line else "" for line in text.splitlines())


def _render_name(name: str, obj: Any) -> list[str]:
    if inspect.isclass(obj):
        bases = [b.__name__ for b in obj.__bases__ if b is not object]
        head = f"### class `{name}`" + (f" ({', '.join(bases)})" if bases else "")
        lines = [head, "", _doc(obj), ""]
        if not issubclass(obj, BaseException):
            init = vars(obj).get("__init__")
            if init is not None:
                lines += [f"`{_signature(name, obj)}`", ""]
            for attr, value in _members(obj):
                lines += _render_member(name, attr, value)
        return lines
    if callable(obj):
        prefix = "async " if inspect.iscoroutinefunction(obj) else ""
        return [f"### `{prefix}{_signature(name, obj)}`", "", _doc(obj), ""]
    return [f"### `{name}`", "", f"`{name} = {obj!r}`", ""]


def render() -> str:
    """The whole reference as Markdown."""
    out = [
        "# API reference",
        "",
        "Generated from the docstrings by `python scripts/api_docs.py`; do not edit by hand.",
        "",
    ]
    seen: set[int] = set()
    for module_name, summary in MODULES:
        module = importlib.import_module(module_name)
        out += [f"## `{module_name}`: {summary}", "", _doc(module), ""]
        for name in sorted(getattr(module, "__all__", [])):
            if name.startswith("__"):
                continue
            obj = getattr(module, name)
            key = id(obj)
            if (inspect.isclass(obj) or callable(obj)) and key in seen:
                out += [f"- `{name}`: see above.", ""]
                continue
            seen.add(key)
            out += _render_name(name, obj)
    return "\n".join(out).rstrip() + "\n"


def main() -> int:
    """Write or check ``docs/api.md``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if docs/api.md is stale")
    args = parser.parse_args()
    text = render()
    if args.check:
        if not TARGET.exists() or TARGET.read_text(encoding="utf-8") != text:
            print(f"{TARGET} is stale: run `python scripts/api_docs.py`", file=sys.stderr)
            return 1
        print(f"{TARGET} is up to date")
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
