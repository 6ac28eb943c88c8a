"""emit.pretty_json writes exactly what json.dumps(indent=2, ensure_ascii=False) writes."""

from __future__ import annotations

import json
import random

import pytest

from cgsc.output.emit import pretty_json
from cgsc.lower.qemu import Hex

TEXT = ["", "a", "é", "\u2028", '"', "\\", "\n", "\x00", "\x7f", "😀", "\ud800", "\ufdd0", "</x>"]


def _value(rng: random.Random, depth: int):
    kind = rng.randrange(9 if depth < 4 else 6)
    if kind == 0:
        return rng.choice(TEXT) + rng.choice(TEXT)
    if kind == 1:
        return rng.choice([0, -1, 2 ** 64, Hex(0x30000), 7])
    if kind == 2:
        return rng.choice([0.5, -0.0, 1e300, 3.0])
    if kind == 3:
        return rng.choice([True, False, None])
    if kind in (4, 5):
        return rng.choice(["sha256", "x" * 70])
    if kind == 6:
        return [_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    if kind == 7:
        return tuple(_value(rng, depth + 1) for _ in range(rng.randrange(3)))
    return {rng.choice(TEXT) + str(i): _value(rng, depth + 1) for i in range(rng.randrange(4))}


def test_random_documents_are_written_as_json_dumps_writes_them():
    rng = random.Random(1127)
    for _ in range(3000):
        doc = _value(rng, 0)
        assert pretty_json(doc) == json.dumps(doc, indent=2, ensure_ascii=False), doc


def test_every_example_manifest_is_json_dumps_output(tmp_path):
    from helpers import VALID_SPECS, run_cli
    code, _out, err = run_cli("build", *VALID_SPECS, "-o", str(tmp_path))
    assert code == 0, err
    manifests = sorted(tmp_path.glob("*/manifest.json"))
    assert len(manifests) == len(VALID_SPECS)
    for path in manifests:
        text = path.read_text(encoding="utf-8")
        assert text == json.dumps(json.loads(text), indent=2, ensure_ascii=False) + "\n"


def test_a_key_that_is_not_text_is_refused():
    with pytest.raises(TypeError):
        pretty_json({1: "a"})
