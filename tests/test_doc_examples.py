"""The specs and outputs the README and the guides show are what cgsc accepts and writes
(the KubeVirt sample once showed an unquoted uuid that cgsc itself quotes)."""

from __future__ import annotations

import os
import re

import pytest
from helpers import ROOT, run_cli


def _blocks(rel):
    with open(os.path.join(ROOT, rel), encoding="utf-8") as fh:
        return re.findall(r"```(\w*)\n(.*?)```", fh.read(), re.S)


def _without_header(text: str) -> str:
    lines = text.splitlines(keepends=True)
    while lines and (lines[0].startswith("#") or lines[0] == "---\n"):
        lines.pop(0)
    return "".join(lines)


def test_the_kubevirt_sample_is_what_cgsc_writes(tmp_path):
    blocks = _blocks(os.path.join("docs", "targets.md"))
    i = next(i for i, (lang, body) in enumerate(blocks)
             if lang == "toml" and "[targets.kubevirt]" in body and "spec-version" in body)
    spec = tmp_path / "ledger.toml"
    spec.write_text(blocks[i][1])
    code, out, err = run_cli("build", str(spec), "-t", "kubevirt", "--stdout")
    assert code == 0, err
    shown = next(body for lang, body in blocks[i + 1:] if lang == "yaml")
    assert shown == _without_header(out)


SPEC_DOCS = ["README.md"] + [os.path.join("docs", f) for f in sorted(os.listdir(
    os.path.join(ROOT, "docs"))) if f.endswith(".md")]


@pytest.mark.parametrize("doc", SPEC_DOCS)
def test_every_whole_spec_shown_validates(doc, tmp_path):
    """A TOML block that is a whole spec (it says spec-version) validates as shown."""
    for n, (lang, body) in enumerate(_blocks(doc)):
        if lang != "toml" or not body.startswith("spec-version"):
            continue
        spec = tmp_path / f"block{n}.toml"
        spec.write_text(body)
        code, _out, err = run_cli("validate", str(spec))
        assert code == 0, (doc, n, err)
