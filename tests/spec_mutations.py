"""Mutations of the project's valid specs, shared by the fuzz tests and the compiled
schema check's agreement test: a small TOML writer, the seed specs, and value mutations."""

from __future__ import annotations

import copy
import random
import sys

from helpers import VALID_SPECS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TEXT_SEEDS, DATA_SEEDS = [], []
for _path in VALID_SPECS:
    with open(_path, encoding="utf-8") as _fh:
        _text = _fh.read()
    if "extends" not in tomllib.loads(_text):
        TEXT_SEEDS.append(_text)
        DATA_SEEDS.append(tomllib.loads(_text))

HOSTILE = ["", "web\n", "a\\", "---", "\ufffe", "\U0010ffff", "\ufdd0", "x" * 5000, "%n", "$x",
           "a,b", "a;b", "..", "/..", "/a/", "\x1b[31m", "\u2028", "'\"", "é" * 70]


def _toml_string(s: str) -> str:
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)  # 8.0, inf, nan: TOML spells them as Python does
    if isinstance(v, str):
        return _toml_string(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml_string(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(v)


def to_toml(data: dict) -> str:
    """A small TOML writer for the fuzzer (top-level tables and arrays of tables)."""
    lines = []
    for k, v in data.items():
        if not isinstance(v, dict) and not (isinstance(v, list) and v and all(isinstance(x, dict) for x in v)):
            lines.append(f"{_toml_string(k)} = {_toml_value(v)}")
    for k, v in data.items():
        if isinstance(v, dict):
            lines.append(f"[{_toml_string(k)}]")
            lines += [f"{_toml_string(kk)} = {_toml_value(vv)}" for kk, vv in v.items()]
        elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            for item in v:
                lines.append(f"[[{_toml_string(k)}]]")
                lines += [f"{_toml_string(kk)} = {_toml_value(vv)}" for kk, vv in item.items()]
    return "\n".join(lines) + "\n"


# A -device word in QEMU's JSON form nested deeper than any reader recurses (within the
# schema's 4,096 characters a word): cgsc reads it itself (lower/qemu.json_object).
DEEP_DEVICE = '{"driver": "virtio-rng-pci", "id": ' + "[" * 2000 + "]" * 2000 + "}"


def value_mutation(rng: random.Random, data: dict) -> str:
    data = copy.deepcopy(data)
    if rng.random() < 0.05:
        qemu = data.setdefault("qemu", {})
        if isinstance(qemu, dict):
            qemu["extra-args"] = ["-device", rng.choice([DEEP_DEVICE, DEEP_DEVICE[:-1],
                                                         "{" * 3000])]
            return to_toml(data)
    tables = [data] + [v for v in data.values() if isinstance(v, dict)]
    tables += [x for v in data.values() if isinstance(v, list) for x in v if isinstance(x, dict)]
    tables += [v for t in list(tables) for v in t.values() if isinstance(v, dict)]
    table = rng.choice(tables)
    key = rng.choice(sorted(table)) if table and rng.random() < 0.8 else rng.choice(["bogus", "name"])
    table[key] = rng.choice([1.0, 8.0, -1, 2 ** 70, True, [], {}, [1, "a"], {"x": {"y": []}},
                             *HOSTILE])
    return to_toml(data)
