"""Canonical XML: attributes in the order given, two-space indent, single quotes.

Every value goes through cgsc.escape's xml_* functions; nothing else writes XML.
"""

from __future__ import annotations

from typing import List

from cgsc.escape import xml_attr, xml_comment, xml_text
from cgsc.plan import Element

COMMENT = "!--"


def comment(text: str) -> Element:
    return Element(COMMENT, text=text)


def serialize(root: Element, leading_comment: str = "") -> str:
    lines: List[str] = [f"<!-- {xml_comment(leading_comment)} -->"] if leading_comment else []
    _write(root, 0, lines)
    return "\n".join(lines) + "\n"


def _write(el: Element, depth: int, lines: List[str]) -> None:
    pad = "  " * depth
    if el.tag == COMMENT:
        lines.append(f"{pad}<!-- {xml_comment(el.text or '')} -->")
        return
    attrs = "".join(f" {k}='{xml_attr(v)}'" for k, v in el.attrs)
    if el.children:
        lines.append(f"{pad}<{el.tag}{attrs}>")
        for child in el.children:
            _write(child, depth + 1, lines)
        lines.append(f"{pad}</{el.tag}>")
    elif el.text is not None:
        lines.append(f"{pad}<{el.tag}{attrs}>{xml_text(el.text)}</{el.tag}>")
    else:
        lines.append(f"{pad}<{el.tag}{attrs}/>")
