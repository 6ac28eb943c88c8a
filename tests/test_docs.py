"""docs/ is the specification of the language: the generated half is current, the rule
catalogue and the code name the same rules, every key of the schema is documented, and
every link in the README and the guides leads somewhere."""

from __future__ import annotations

import os
import re

import pytest
from helpers import ROOT

from cgsc.review import reference


@pytest.mark.parametrize("rel", sorted(reference.outputs()))
def test_the_generated_docs_are_current(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as fh:
        committed = fh.read()
    assert committed == reference.outputs()[rel], \
        f"{rel} is stale: run `python -m cgsc.regenerate` and commit the result"


def test_every_rule_in_the_code_is_in_the_catalogue_and_nothing_else():
    from cgsc.core.rules import load_all
    with open(os.path.join(ROOT, reference.RULES_FILE), encoding="utf-8") as fh:
        documented = re.findall(r"^### (CGS-[A-Z0-9]+-\d{3})$", fh.read(), re.M)
    assert len(documented) == len(set(documented))
    assert set(documented) == set(load_all())


def test_every_rule_has_an_explanation_a_fix_and_a_reference():
    from cgsc.core.rules import load_all
    thin = [r.id for r in load_all().values() if not (r.explanation and r.fix and r.reference)]
    assert thin == [], thin


def _keys(node, prefix=""):
    for key, sub in node.get("properties", {}).items():
        yield prefix + key
        for alt in [sub] + list(sub.get("oneOf") or sub.get("anyOf") or []):
            if alt.get("type") == "object":
                yield from _keys(alt, f"{prefix}{key}.")
            if alt.get("type") == "array" and alt.get("items", {}).get("properties"):
                yield from _keys(alt["items"], f"{prefix}{key}[].")


def test_every_key_of_the_schema_is_in_the_key_reference():
    from cgsc.spec.schema import inlined
    schema = inlined()
    with open(os.path.join(ROOT, reference.KEYS_FILE), encoding="utf-8") as fh:
        text = fh.read()
    missing = []
    for table, node in schema["properties"].items():
        if table == "confidential":
            for mech, sub in node["properties"].items():
                assert f"`[confidential.{mech}]`" in text, mech
                missing += [f"confidential.{mech}.{k}" for k in _keys(sub)
                            if f"| `{k}` |" not in text]
            continue
        body = node.get("items", node)
        missing += [f"{table}.{k}" for k in _keys(body) if f"| `{k}` |" not in text]
    assert missing == [], missing


DOCUMENTS = ["README.md"] + [os.path.join("docs", f) for f in sorted(os.listdir(
    os.path.join(ROOT, "docs"))) if f.endswith(".md")] + [
    os.path.join("docs", "reference", f) for f in ("keys.md", "rules.md")]


@pytest.mark.parametrize("doc", DOCUMENTS)
def test_every_relative_link_leads_to_a_file(doc):
    with open(os.path.join(ROOT, doc), encoding="utf-8") as fh:
        text = fh.read()
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if "://" in target or target.startswith("mailto:"):
            continue
        if not os.path.exists(os.path.normpath(os.path.join(ROOT, os.path.dirname(doc), target))):
            broken.append(target)
    assert broken == [], broken


def test_the_docs_index_names_every_guide():
    with open(os.path.join(ROOT, "docs", "README.md"), encoding="utf-8") as fh:
        index = fh.read()
    guides = [f for f in os.listdir(os.path.join(ROOT, "docs")) if f.endswith(".md")
              and f != "README.md"]
    for guide in guides + ["reference/keys.md", "reference/rules.md"]:
        assert f"]({guide})" in index, guide
