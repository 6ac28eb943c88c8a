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


def test_the_readme_example_gives_the_output_it_shows(tmp_path):
    blocks = _blocks("README.md")
    spec = next(body for lang, body in blocks if lang == "toml")
    shown = next(body for lang, body in blocks if lang == "console")
    assert 15 <= spec.count("\n") <= 25           # a 20-line example
    (tmp_path / "payments-db.toml").write_text(spec)
    import subprocess
    import sys
    build = subprocess.run([sys.executable, "-m", "cgsc", "build", "payments-db.toml"],
                           cwd=tmp_path, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    script = (tmp_path / "out" / "payments-db" / "payments-db.sh").read_text()
    set_lines = script[script.index("set -- "):script.index('exec "$@"') + len('exec "$@"')]
    expected = ("$ cgsc build payments-db.toml\n" + build.stderr
                + "$ sed -n '/^set --/,/^exec/p' out/payments-db/payments-db.sh\n"
                + set_lines + "\n")
    assert shown == expected


def test_the_readme_has_the_two_commands_and_ci_runs_the_second():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        readme = fh.read()
    assert readme.count("\n") < 200
    install, test = re.search(r"```sh\n(.*?)```", readme, re.S).group(1).strip().split("\n")
    assert install.endswith("cgsc build examples/sev-snp.toml")
    with open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8") as fh:
        ci = fh.read()
    assert test in ci.splitlines()
    with open(os.path.join(ROOT, ".ci", "trixie-test"), encoding="utf-8") as fh:
        trixie = fh.read()
    # the Debian 13 run: the same command, with the markers it leaves out as arguments
    assert test.replace("python -m pytest", 'python -m pytest "$@"') in \
        [line.strip() for line in trixie.splitlines()]


DOCUMENTED_RESTART = {"sev": "on-failure", "pef": "on-failure", "s390-pv": "on-failure",
                      "sev-es": "always", "sev-snp": "always", "tdx": "always"}


def test_the_documented_restart_default_is_what_the_units_say(tmp_path):
    """The original brief said `restart` defaults to on-failure; SEV-ES, SEV-SNP and TDX
    units say Restart=always (a reboot ends QEMU). The docs say what the units do."""
    with open(os.path.join(ROOT, "docs", "language.md"), encoding="utf-8") as fh:
        language = " ".join(fh.read().split())
    assert "`on-failure` for SEV, PEF and s390-pv" in language
    assert "TDX guests end QEMU when they reboot" in language and "`Restart=always`" in language
    for mechanism, restart in DOCUMENTED_RESTART.items():
        spec = tmp_path / f"{mechanism}.toml"
        assert run_cli("init", "-m", mechanism, f"g-{mechanism}", "-o", str(spec))[0] == 0
        code, out, err = run_cli("build", str(spec), "-t", "systemd", "--stdout")
        assert code == 0, err
        assert f"\nRestart={restart}\n" in out, (mechanism, out)
