"""The schema compiled into Python (cgsc.spec.schema_compiler) says "valid" exactly when jsonschema
does: over every spec of the project, the fuzz corpus's value mutations, and boundary
mutations derived from the schema at every key of every valid spec."""

from __future__ import annotations

import copy
import glob
import functools
import itertools
import os
import random
import sys

import pytest

from cgsc.spec import compiled_check, schema_compiler, validate
from cgsc.core.diagnostics import SpecError
from cgsc.spec.source import load
from helpers import INVALID, ROOT, VALID_SPECS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

KUBEVIRT = sorted(glob.glob(os.path.join(ROOT, "examples", "kubevirt", "*.toml")))


def jsonschema_says_valid(data) -> bool:
    return next(iter(validate.validator().iter_errors(data)), None) is None


def test_the_shipped_check_is_the_compilation_of_the_schema_as_bundled_now():
    with open(compiled_check.GENERATED, encoding="utf-8") as fh:
        shipped = fh.read()
    assert shipped == schema_compiler.generate(), \
        "stale: run `python -m cgsc.regenerate` after changing the schema"


def test_the_shipped_check_is_used_and_a_stale_one_is_not(monkeypatch):
    assert compiled_check.check() is not None
    monkeypatch.setattr(compiled_check, "key", lambda: "0" * 64)  # schema files edited since
    assert compiled_check.check() is None


def test_a_stale_check_leaves_validation_to_jsonschema(monkeypatch, tmp_path):
    """With no compiled check every spec still gets jsonschema's verdict and wording."""
    monkeypatch.setattr(validate, "quick_check", lambda: None)
    data = load(VALID_SPECS[0]).data
    assert validate.schema_errors(data) == []
    broken = dict(data, guest=dict(data["guest"], vcpus="two"))
    assert [d.rule for d in validate.schema_errors(broken)] == ["CGS-SCHEMA-003"]


def _spec_data(paths):
    for path in paths:
        try:
            yield load(path).data
        except SpecError:  # does not load at all (TOML errors, extends problems)
            pass


def _boundaries(schema: dict):
    """Values at and just past each limit the schema node sets, and of other types."""
    out = [None, True, False, 0, -1, 1.5, "", "x", [], {}, ["a", "a"], {"bogus": 1}, 2 ** 64,
           "a\ud800", "a\ufdd0", "line\n", "/a/../b", " x", "x ", "\x1b", "é" * 3]
    for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
        if key in schema:
            out += [schema[key] - 1, schema[key], schema[key] + 1]
    for key in ("minLength", "maxLength"):
        if key in schema:
            out += ["a" * max(0, schema[key] - 1), "a" * schema[key], "a" * (schema[key] + 1)]
    for key in ("minItems", "maxItems"):
        if key in schema:
            out += [["a"] * max(0, schema[key] - 1), ["a"] * (schema[key] + 1)]
    for value in schema.get("enum", []):
        if isinstance(value, str):
            out += [value.upper(), value + " ", value[:-1]]
        elif isinstance(value, bool):
            out += [int(value)]
        elif isinstance(value, int):
            out += [float(value), value + 1]
    return out


def _node(schema: dict, path):
    """The schema node of a key path (properties/items; allOf parts merged in)."""
    node = schema
    for part in path:
        if isinstance(part, int):
            node = node.get("items", {})
        else:
            props = node.get("properties", {})
            node = props.get(part) or next(
                (v for p, v in node.get("patternProperties", {}).items()), {})
    merged = dict(node)
    for sub in node.get("allOf", []):
        merged.update({k: v for k, v in sub.items() if k not in merged})
    return merged


def _paths(data, path=()):
    yield path
    if isinstance(data, dict):
        for key, value in data.items():
            yield from _paths(value, path + (key,))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            yield from _paths(value, path + (i,))


def _at(data, path):
    for part in path:
        data = data[part]
    return data


def _replaced(data, path, value):
    data = copy.deepcopy(data)
    holder = data
    for part in path[:-1]:
        holder = holder[part]
    if value is _DELETE:
        del holder[path[-1]]
    else:
        holder[path[-1]] = value
    return data


_DELETE = object()


def seeds():
    """Every valid spec, and one with the KubeVirt keys no example uses."""
    specs = list(_spec_data(VALID_SPECS + KUBEVIRT))
    host_disk = copy.deepcopy(next(s for s in specs if "kubevirt" in s.get("targets", {})))
    host_disk["disk"][0]["kubevirt"] = {"host-disk": True}
    host_disk["targets"]["kubevirt"]["feature-gates"] = ["HostDisk"]
    assert jsonschema_says_valid(host_disk)
    return specs + [host_disk]


def boundary_mutations():
    """Every key of every valid spec: each boundary value, and the key deleted; every
    table: an unknown key added."""
    schema = validate.python_schema()
    for data in seeds():
        for path in _paths(data):
            if not path:
                continue
            here = _at(data, path)
            doubled = [here + here] if isinstance(here, list) and here else []
            for value in _boundaries(_node(schema, path)) + doubled + [_DELETE]:
                yield _replaced(data, path, value)
            if isinstance(here, dict):
                node = _node(schema, path)
                for key in list(node.get("properties", {}))[:3] + ["bogus", "CGS-X-001"]:
                    yield _replaced(data, path + (key,), "x")


def fuzz_value_mutations(count=3000):
    from spec_mutations import DATA_SEEDS, value_mutation
    rng = random.Random(4711)
    for _ in range(count):
        try:
            yield tomllib.loads(value_mutation(rng, rng.choice(DATA_SEEDS)))
        except tomllib.TOMLDecodeError:
            pass


def test_the_quick_check_agrees_with_jsonschema_on_every_spec_and_mutation():
    quick = compiled_check.check()
    seen = valid = 0
    for data, expected in corpus():
        # "valid" only when jsonschema agrees (else a bad spec would pass unchecked), and
        # "not sure" only when it does not (else the quick path would buy nothing)
        assert quick(data) == expected, data
        seen += 1
        valid += expected
    assert seen > 15_000 and 1_000 < valid < seen - 10_000, (seen, valid)


@functools.lru_cache(maxsize=None)
def _corpus():
    return [(data, jsonschema_says_valid(data)) for data in itertools.chain(
        seeds(), _spec_data(INVALID), boundary_mutations(), fuzz_value_mutations())]


def corpus():
    return _corpus()


def _compiled(writer, schema) -> dict:
    name = writer.node(schema)
    namespace: dict = {}
    exec(compile(schema_compiler._PRELUDE + "\n".join(writer.constants) + "\n"
                 + "\n".join(writer.code) + "\n" + "\n".join(writer.tables), "<test>", "exec"),
         namespace)
    return namespace[name]


def _keywords(node):
    if isinstance(node, dict):
        yield from node
        for key, value in node.items():
            if key in ("properties", "patternProperties"):
                value = list(value.values())
            yield from _keywords(value)
    elif isinstance(node, list):
        for value in node:
            yield from _keywords(value)


# every minLength of the schema is implied by its pattern (one or more characters): no
# spec can tell a check without it; test_each_keyword_compiles_to_what_it_means covers it
IMPLIED = {"minLength"}


@pytest.mark.parametrize("keyword", sorted(
    set(_keywords(validate.python_schema())) & schema_compiler._HANDLED - IMPLIED))
def test_the_corpus_catches_a_check_that_forgets_a_keyword(keyword):
    """Negative control: compiled without one keyword, the check disagrees with
    jsonschema somewhere in the corpus (so the agreement above means something)."""
    class Forgetful(schema_compiler._Writer):
        def body(self, s):
            return super().body({k: v for k, v in s.items() if k != keyword})
    forgetful = _compiled(Forgetful(), validate.python_schema())
    assert any(forgetful(data) != expected for data, expected in corpus()), keyword


@pytest.mark.parametrize("schema, good, bad", [
    ({"enum": [1]}, [1], [True, 1.0, "1"]),
    ({"const": True}, [True], [1, "true"]),
    ({"type": "integer"}, [3, 2 ** 70], [True, 3.0, "3"]),
    ({"type": "string", "maxLength": 2}, ["ab", "é"], ["abc", "a\udc80", 1]),
    ({"type": "array", "uniqueItems": True}, [["a", "b"], []], [["a", "a"]]),
    ({"minimum": 1, "maximum": 3}, [1, 3, "not a number"], [0, 4, 0.5]),
    ({"exclusiveMinimum": 1, "exclusiveMaximum": 3}, [2, 1.5], [1, 3]),
    ({"type": "object", "properties": {"a": {"type": "string"}},
      "patternProperties": {"^x-": {"type": "integer"}}, "additionalProperties": False,
      "required": ["a"], "minProperties": 1, "maxProperties": 2},
     [{"a": "s"}, {"a": "s", "x-1": 1}], [{}, {"a": 1}, {"a": "s", "b": 1},
                                          {"a": "s", "x-1": "s"}, {"a": "s", "x-1": 1, "x-2": 2}]),
    ({"if": {"required": ["e"]}, "else": {"required": ["a"]}}, [{"e": 1}, {"a": 1}], [{}]),
    ({"allOf": [{"pattern": "^a"}, {"pattern": "b\\Z"}]}, ["ab", 5], ["ba", "a"]),
])
def test_each_keyword_compiles_to_what_it_means(schema, good, bad):
    check = _compiled(schema_compiler._Writer(), schema)
    assert [check(v) for v in good] == [True] * len(good)
    assert [check(v) for v in bad] == [False] * len(bad)


def test_a_keyword_that_is_not_compiled_stops_the_compiler():
    with pytest.raises(ValueError, match="oneOf"):
        schema_compiler._Writer().node({"oneOf": [{"type": "string"}]})


def test_the_key_covers_the_code_that_shapes_the_check(tmp_path, monkeypatch):
    """A patched schema.py, validate.py, schema_compiler.py, compiled_check.py or the mechanism
    registry makes
    the shipped check stale, as an edited schema file does."""
    import shutil
    original = compiled_check.key()
    here = tmp_path / "spec"   # CODE names a module of the package beside spec/ too
    for name in compiled_check.CODE:
        copy = here / name
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(os.path.join(compiled_check.HERE, name), copy)
    monkeypatch.setattr(compiled_check, "HERE", str(here))
    assert compiled_check.key() == original
    for name in compiled_check.CODE:
        path = here / name
        text = path.read_bytes()
        path.write_bytes(text + b"\n# patched\n")
        assert compiled_check.key() != original, name
        path.write_bytes(text)


@pytest.mark.parametrize("schema", [
    {"maxLength": "0 or __import__('os').system('echo INJECTED')"},
    {"maximum": "1 if True else 2"},
    {"minItems": 1.5},
    {"minimum": float("nan")},
    {"enum": [float("inf")]},
    {"enum": [["a"]]},
    {"type": "text"},
])
def test_a_schema_value_is_never_pasted_into_the_check_unchecked(schema):
    with pytest.raises((ValueError, KeyError)):
        schema_compiler._Writer().node(schema)


def test_without_the_sources_to_key_the_check_is_not_used(monkeypatch, tmp_path):
    """An installation that lacks a file of the key (sources stripped): jsonschema decides."""
    monkeypatch.setattr(compiled_check, "HERE", str(tmp_path))   # no schema.py etc. here
    assert compiled_check.check() is None
