"""The package's shape, as docs/architecture.md states it: imports follow the file tree
(relative inside the package), no import cycles, every stage imports only the layers
below it, nothing imports the CLI, targets never see a mechanism, generated code lives
apart, and no two modules have names a letter apart."""

from __future__ import annotations

import ast
import os
import re
from typing import Dict, Iterator, Set, Tuple

import pytest

from helpers import ROOT

# Where each part of the cgsc package lives in the repository.
PACKAGE_DIRS = {"cgsc": "compiler", "cgsc.schema": "schema", "cgsc.targets": "targets"}

# The layers, lowest first (docs/architecture.md). A module may import its own layer and
# the layers below. The mechanism registry (mechanisms/__init__.py) sits at the bottom so
# that every stage can look a mechanism up; the mechanism modules implement it on top of
# the stage vocabularies they fill in (plan records, QEMU pieces, firmware formats), and
# the stages reach them only through the registry.
LAYERS = (
    ("cgsc.core", "cgsc.schema"),
    ("cgsc.mechanisms",),          # the registry module only
    ("cgsc.spec",),
    ("cgsc.lower",),
    ("cgsc.measure",),
    ("cgsc.host",),
    ("cgsc.mechanisms.*",),        # the mechanism modules
    ("cgsc.targets",),
    ("cgsc.pipeline",),
    ("cgsc.output",),
    ("cgsc.review", "cgsc.regenerate", "cgsc.api"),
    ("cgsc.cli",),
    ("cgsc", "cgsc.__main__"),
)


def modules() -> Dict[str, str]:
    """module name -> file, for every module of the package."""
    found = {}
    for package, directory in PACKAGE_DIRS.items():
        top = os.path.join(ROOT, directory)
        for base, dirs, files in os.walk(top):
            dirs[:] = sorted(d for d in dirs if d != "__pycache__")
            for name in sorted(files):
                if not name.endswith(".py"):
                    continue
                rel = os.path.relpath(os.path.join(base, name), top)[:-3].split(os.sep)
                if rel[-1] == "__init__":
                    rel = rel[:-1]
                found[".".join([package] + rel)] = os.path.join(base, name)
    return found


MODULES = modules()


def layer(module: str) -> int:
    if module.startswith("cgsc.mechanisms."):
        module_key = "cgsc.mechanisms.*"
    else:
        module_key = None
    for rank, names in enumerate(LAYERS):
        for name in names:
            if name == module_key or module == name or (
                    not name.endswith("*") and name not in ("cgsc", "cgsc.mechanisms")
                    and module.startswith(name + ".")):
                return rank
    raise AssertionError(f"{module} is in no layer of docs/architecture.md")


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports(module: str) -> Iterator[Tuple[int, str, bool]]:
    """(line, imported module, relative?) for every import of a cgsc module that runs
    (imports under `if TYPE_CHECKING:` are annotations only and are left out)."""
    path = MODULES[module]
    tree = ast.parse(open(path, encoding="utf-8").read(), path)
    package = module.split(".") if path.endswith("__init__.py") else module.split(".")[:-1]

    def walk(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _type_checking(child):
                continue
            yield child
            yield from walk(child)

    for node in walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "cgsc" or alias.name.startswith("cgsc."):
                    yield node.lineno, _resolve(alias.name), False
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target != "cgsc" and not target.startswith("cgsc."):
                continue
            for alias in node.names:
                full = f"{target}.{alias.name}"
                yield node.lineno, full if full in MODULES else _resolve(target), bool(node.level)


def _resolve(name: str) -> str:
    while name not in MODULES:
        name = name.rsplit(".", 1)[0]
    return name


def graph() -> Dict[str, Set[str]]:
    return {m: {t for _line, t, _rel in imports(m) if t != m} for m in MODULES}


def test_every_module_is_in_a_layer():
    for module in MODULES:
        layer(module)


def test_imports_inside_the_package_are_relative():
    absolute = [f"{MODULES[m]}:{line}: {t}" for m in MODULES for line, t, rel in imports(m)
                if not rel]
    assert absolute == []


def test_no_import_cycles():
    edges = graph()
    done: Set[str] = set()

    def visit(node, stack):
        if node in stack:
            return stack[stack.index(node):] + [node]
        if node in done:
            return None
        for nxt in sorted(edges[node]):
            cycle = visit(nxt, stack + [node])
            if cycle:
                return cycle
        done.add(node)
        return None

    for module in sorted(edges):
        cycle = visit(module, [])
        assert cycle is None, " -> ".join(cycle)


def test_no_module_imports_a_later_layer():
    upward = [f"{MODULES[m]}:{line}: {m} imports {t}"
              for m in MODULES for line, t, _rel in imports(m)
              if t != "cgsc" and layer(t) > layer(m)]
    assert upward == []


def test_nothing_imports_the_cli_and_targets_never_see_a_mechanism():
    edges = graph()
    assert [m for m, ts in edges.items() if "cgsc.cli" in ts and m != "cgsc.__main__"] == []
    assert [(m, t) for m, ts in edges.items() if m.startswith("cgsc.targets")
            for t in ts if t.startswith("cgsc.mechanisms")] == []


def test_the_layer_test_would_catch_an_upward_import(tmp_path, monkeypatch):
    """Negative control: a spec module that imports the CLI is reported."""
    fake = tmp_path / "fake.py"
    fake.write_text("from ..cli import main\n")
    monkeypatch.setitem(MODULES, "cgsc.spec.fake", str(fake))
    found = [t for _line, t, _rel in imports("cgsc.spec.fake")]
    assert found == ["cgsc.cli"] and layer("cgsc.cli") > layer("cgsc.spec.fake")


def test_generated_code_lives_in_generated_packages():
    generated = {m for m, path in MODULES.items()
                 if open(path, encoding="utf-8").readline().startswith("# Generated by")}
    assert generated and all("._generated." in m for m in generated)
    assert all(m.split(".")[-1] != "_generated" or not open(MODULES[m]).read().count("def ")
               for m in MODULES)


def _one_letter_apart(a: str, b: str) -> bool:
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b)) == 1
    short, long_ = sorted((a, b), key=len)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


def test_no_two_modules_have_names_a_letter_apart():
    names = sorted({m.rsplit(".", 1)[-1] for m in MODULES if not m.endswith("__main__")})
    assert [(a, b) for i, a in enumerate(names) for b in names[i + 1:]
            if _one_letter_apart(a, b)] == []
    assert _one_letter_apart("check", "checks")   # the rule itself
