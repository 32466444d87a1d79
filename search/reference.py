"""The config reference, rendered from the pydantic schema so the README cannot drift.

    python -m search.reference            # print the markdown table
    python -m search.reference --write README.md   # replace the marked block in place
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from pathlib import Path
from typing import Any

import annotated_types as at
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from .config import Config

START = "<!-- config-reference:start (python -m search.reference --write README.md) -->"
END = "<!-- config-reference:end -->"


def _type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(f"`{a}`" for a in args)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        text = " \\| ".join(_type(a) for a in inner)
        return f"{text} \\| null" if len(inner) < len(args) else text
    if origin is list:
        return f"list of {_type(args[0])}"
    return getattr(annotation, "__name__", str(annotation))


_BOUNDS = {at.Gt: (">", "gt"), at.Ge: ("≥", "ge"), at.Lt: ("<", "lt"), at.Le: ("≤", "le")}


def _bounds(info: FieldInfo) -> str:
    parts = []
    for meta in info.metadata:
        for cls, (sign, attr) in _BOUNDS.items():
            if isinstance(meta, cls):
                parts.append(f"{sign} {getattr(meta, attr)}")
        if isinstance(meta, at.MinLen):
            parts.append(f"≥ {meta.min_length} items")
    return ", ".join(parts)


def _default(info: FieldInfo) -> str:
    value = info.get_default(call_default_factory=True)
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


def rows(model: type[BaseModel] = Config, prefix: str = "") -> list[tuple[str, ...]]:
    """(dotted key, type, default, bounds, description) for every leaf of the schema."""
    out = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        ann = info.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            out += rows(ann, f"{key}.")
            continue
        out.append((key, _type(ann), _default(info), _bounds(info), info.description or ""))
    return out


def markdown() -> str:
    lines = ["| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    for key, typ, default, bounds, desc in rows():
        lines.append(f"| `{key}` | {typ} | `{default}` | {bounds} | {desc} |")
    return "\n".join(lines)


def block() -> str:
    return f"{START}\n{markdown()}\n{END}"


def replace_block(text: str) -> str:
    """`text` with the marked block replaced by the current reference."""
    if START not in text or END not in text:
        raise ValueError(f"missing the markers {START!r} ... {END!r}")
    head, rest = text.split(START, 1)
    tail = rest.split(END, 1)[1]
    return head + block() + tail


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Render the config reference from the schema.")
    p.add_argument("--write", type=Path, help="replace the marked block in this file")
    args = p.parse_args(argv)
    if args.write is None:
        print(markdown())
        return 0
    args.write.write_text(replace_block(args.write.read_text()))
    print(f"updated the config reference in {args.write}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
