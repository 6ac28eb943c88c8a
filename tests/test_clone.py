"""A newcomer's path, for real: a git clone of this repository in a directory with nothing
beside it (no ../shared), the README's first command (install, build an example), and the
README's test command on a quick subset of the tests."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
from conftest import missing
from helpers import ROOT

QUICK = ["tests/test_docs.py", "tests/test_doc_examples.py", "tests/cli/test_teaching.py",
         "tests/test_api.py", "tests/test_cases.py"]


def _readme_commands():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        block = re.search(r"```sh\n(.*?)```", fh.read(), re.S).group(1)
    install, test = block.strip().split("\n")
    return install, test


def test_a_fresh_clone_installs_builds_and_tests(tmp_path):
    git = shutil.which("git")
    if git is None:
        missing("git is not installed (Debian: apt-get install git)")
    if not os.path.isdir(os.path.join(ROOT, ".git")) and not os.path.isfile(os.path.join(ROOT, ".git")):
        pytest.skip("not a git checkout: nothing to clone")
    clone = tmp_path / "cgsc"
    subprocess.run([git, "clone", "-q", "--no-hardlinks", ROOT, str(clone)], check=True)
    assert not (tmp_path / "shared").exists()
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    venv_bin = os.path.dirname(shutil.which("python") or "")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p != venv_bin and not p.endswith("/.venv/bin"))
    install, test = _readme_commands()

    def sh(command, timeout):
        return subprocess.run(["bash", "-c", command], cwd=clone, env=env, text=True,
                              capture_output=True, timeout=timeout)
    first = sh(install, 600)
    assert first.returncode == 0, first.stdout + first.stderr
    guest = clone / "out" / "payments-db"
    assert sorted(os.listdir(guest)) == ["manifest.json", "payments-db.service",
                                         "payments-db.sh", "payments-db.xml"]
    assert "cgsc: out/payments-db/" in first.stderr
    quick = test + " -q -x -p no:cacheprovider -m 'not fuzz and not race and not stack and " \
        "not qemu72 and not qemu10' " + \
        " ".join(QUICK)
    second = sh(quick, 900)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-2000:]
    assert re.search(r"\d+ passed", second.stdout), second.stdout[-500:]
