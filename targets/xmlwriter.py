"""Canonical XML: attributes in the order given, two-space indent, single quotes.

Every value goes through cgsc.core.escape's xml_* functions; nothing else writes XML.
"""

from __future__ import annotations

from typing import List

from ..core.escape import xml_attr, xml_comment, xml_text
from ..lower.plan import Element

COMMENT = "!--"


def comment(text: str) -> Element:
    return Element(COMMENT, text=text)


def serialize(root: Element, leading_comment: str = "") -> str:
    lines: List[str] = [f"<!-- {xml_comment(leading_comment)} -->"] if leading_comment else []
    _write(root, "", lines)
    return "\n".join(lines) + "\n"


def _write(el: Element, pad: str, lines: List[str]) -> None:
    tag, attrs, text, children = el
    if tag == COMMENT:
        lines.append(f"{pad}<!-- {xml_comment(text or '')} -->")
        return
    shown = "".join([f" {k}='{xml_attr(v)}'" for k, v in attrs]) if attrs else ""
    if children:
        lines.append(f"{pad}<{tag}{shown}>")
        inner = pad + "  "   # two spaces a level
        for child in children:
            _write(child, inner, lines)
        lines.append(f"{pad}</{tag}>")
    elif text is not None:
        lines.append(f"{pad}<{tag}{shown}>{xml_text(text)}</{tag}>")
    else:
        lines.append(f"{pad}<{tag}{shown}/>")
