"""The installed wheel, not only the editable install, holds every subpackage and data
file: a wheel built from the tracked files, installed alone into a new virtual
environment (its dependencies from this one), builds an example byte-identically."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile

import pytest

from helpers import ROOT



@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """A wheel built from a copy of the tracked files (the checkout stays clean)."""
    src = tmp_path_factory.mktemp("src")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    for rel in filter(None, (name.decode() for name in listed)):
        if not os.path.isfile(os.path.join(ROOT, rel)):
            continue   # deleted in the working tree
        dest = src / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(open(os.path.join(ROOT, rel), "rb").read())
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "-w", str(out), str(src)], check=True, capture_output=True)
    (path,) = out.glob("cgsc-*.whl")
    return path


def test_the_wheel_holds_every_module_and_data_file(wheel):
    from test_architecture import MODULES
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = set()
    for module, path in MODULES.items():
        parts = module.split(".")
        expected.add("/".join(parts + (["__init__.py"] if path.endswith("__init__.py") else []))
                     if path.endswith("__init__.py") else "/".join(parts) + ".py")
    for directory, pattern in (("schema", ".json"), (os.path.join("targets", "templates"), ".j2")):
        for name in os.listdir(os.path.join(ROOT, directory)):
            if name.endswith(pattern):
                expected.add("cgsc/" + directory.replace(os.sep, "/") + "/" + name)
    assert sorted(expected - names) == []


def test_an_example_builds_alike_from_the_wheel_alone(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True)
    # the dependencies from this environment, behind the wheel (a plain path entry: the
    # editable install's finder in this environment's site-packages is not loaded)
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(site, "zz-deps.pth"), "w") as fh:
        fh.write(sysconfig.get_paths()["purelib"] + "\n")
    where = subprocess.run([str(python), "-c", "import cgsc, cgsc.spec.validate as v; "
                            "print(cgsc.__file__); print(v.quick_check() is not None)"],
                           capture_output=True, text=True, check=True, cwd=tmp_path).stdout.split()
    assert where[0].startswith(str(venv)) and where[1] == "True"   # the shipped check is current
    example = os.path.join(ROOT, "examples", "sev-snp.toml")
    trees = []
    for argv in ([str(python), "-m", "cgsc"], [sys.executable, "-m", "cgsc"]):
        out = tmp_path / f"out{len(trees)}"
        subprocess.run(argv + ["build", example, "-o", str(out)], cwd=ROOT, check=True,
                       capture_output=True)
        trees.append({p.relative_to(out): p.read_bytes() for p in out.rglob("*")
                      if p.is_file() and ".cgsc" not in p.parts})
    assert trees[0] and trees[0] == trees[1]
