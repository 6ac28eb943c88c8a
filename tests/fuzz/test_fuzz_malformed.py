"""10,000+ malformed specs through `cgsc validate`, in process: never an internal error.

Mutations at the TOML-text level (truncation, stray bytes, floats for integers, huge
integers, deep nesting, hostile keys) and the value level (wrong types, hostile strings),
from a fixed seed, so every run checks the same specs. Batches of specs go to one
`validate` call, which also shows that specs are reported independently: every refused
spec of a batch gets its own located diagnostics.
"""

from __future__ import annotations

import json
import random
import re
import sys

from helpers import run_cli
from spec_mutations import DATA_SEEDS, HOSTILE, TEXT_SEEDS, value_mutation

if sys.version_info >= (3, 11):
    pass
else:  # pragma: no cover
    pass

TOTAL = 11_000
BATCH = 100
SEED = 20261127

NUMBERS = ["8.0", "51.0", "1e3", "inf", "nan", "-0.0", "2.5", "1" * 4400, "0x" + "f" * 4000,
           "-1", "9223372036854775808", "1979-05-27T07:32:00Z", "07:32:00", "true"]


def _toml_str(s: str) -> str:
    return json.dumps(s)  # a JSON string literal is a TOML basic string


def _text_mutation(rng: random.Random, text: str) -> str:
    lines = text.split("\n")
    kind = rng.randrange(10)
    at = rng.randrange(len(lines))
    if kind == 0:  # truncate anywhere, often inside a value
        return text[:rng.randrange(len(text))]
    if kind == 1:  # a stray character
        pos = rng.randrange(len(text))
        return text[:pos] + rng.choice("=[]{}\"'\\,\x00\x7f\n#.") + text[pos:]
    if kind == 2:  # a number where one was, or where none belongs
        numbers = [i for i, l in enumerate(lines) if re.search(r"= -?\d", l)]
        i = rng.choice(numbers) if numbers else at
        key = lines[i].split("=")[0].strip() or "vcpus"
        lines[i] = f"{key} = {rng.choice(NUMBERS)}"
    elif kind == 3:  # deep nesting
        depth = rng.choice([33, 100, 1000, 5000])
        opener, closer = rng.choice([("[", "]"), ("{ a = ", " }")])
        lines.insert(at, "x = " + opener * depth + "1" + closer * depth)
    elif kind == 4:  # a hostile string for a string value
        strings = [i for i, l in enumerate(lines) if re.search(r'= "', l)]
        i = rng.choice(strings) if strings else at
        key = lines[i].split("=")[0].strip() or "name"
        lines[i] = f"{key} = {_toml_str(rng.choice(HOSTILE))}"
    elif kind == 5:  # a hostile key
        lines.insert(at, f"{_toml_str(rng.choice(HOSTILE) + chr(10) + '::error::x')} = 1")
    elif kind == 6:  # lose a line (a required key, a table header)
        del lines[at]
    elif kind == 7:  # duplicate a line (duplicate keys and tables)
        lines.insert(at, lines[at])
    elif kind == 8:  # invalid UTF-8 or an encoded noncharacter is caught per byte
        lines[at] += rng.choice(["\udcff", "\ufffe", "\U0001fffe"])
    else:  # a table where a value belongs, or an array of tables over a table
        lines.insert(at, rng.choice(["[guest.name]", "[[guest]]", "[confidential.sev.policy]",
                                     "[[disk]]", "disk = 3", "[qemu]", "spec-version = 2"]))
    return "\n".join(lines)


def malformed_specs():
    rng = random.Random(SEED)
    for _ in range(TOTAL):
        if rng.random() < 0.6:
            text = rng.choice(TEXT_SEEDS)
            for _ in range(rng.choice([1, 1, 2, 3])):
                text = _text_mutation(rng, text) or "\n"
        else:
            text = value_mutation(rng, rng.choice(DATA_SEEDS))
        yield text.encode("utf-8", "surrogateescape")


_RULE = re.compile(r"CGS-[A-Z0-9]+-\d{3}")
UNLOCATED = {"CGS-LOAD-001"}  # the file itself cannot be read: there is no line


def test_ten_thousand_malformed_specs_never_crash(tmp_path):
    specs = list(malformed_specs())
    refused = 0
    for start in range(0, len(specs), BATCH):
        batch = specs[start:start + BATCH]
        names = []
        for i, body in enumerate(batch):
            path = tmp_path / f"s{i:03d}.toml"
            path.write_bytes(body)
            names.append(str(path))
        code, out, err = run_cli("validate", "--format", "json", *names)
        assert code in (0, 1) and "internal error" not in err, (start, err)
        diagnostics = json.loads(out)
        for d in diagnostics:
            assert d["file"] in names and _RULE.fullmatch(d["rule"]), d
            if d["severity"] == "error" and d["rule"] not in UNLOCATED:
                assert d["line"], d
        refused += len({d["file"] for d in diagnostics if d["severity"] == "error"})
    # the corpus is malformed, not merely mutated: nearly every spec is refused
    assert refused >= 10_000, refused
