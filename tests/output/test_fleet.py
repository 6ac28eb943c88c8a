"""Fleet builds in worker processes (issue 13): the same trees, order and diagnostics as
one process; a worker killed mid-build leaves the tree as it was."""

from __future__ import annotations

import os
import re
import signal

from helpers import EXAMPLES
from writes_helpers import assert_consistent, cgsc, make_fleet, run_hooked, tree


def _fleet_with_problems(tmp_path):
    """Valid specs, invalid ones, a duplicate name and specs with warnings, interleaved."""
    specs = make_fleet(tmp_path / "specs", 40, bad={5, 23})
    dup = tmp_path / "specs" / "dup.toml"
    with open(specs[7], encoding="utf-8") as fh:
        dup.write_text(fh.read())
    sev = [s for s in EXAMPLES if s.endswith("/sev.toml")]  # a spec with a warning
    return specs[:20] + [str(dup)] + sev + specs[20:]


def test_parallel_and_one_process_builds_write_identical_trees(tmp_path):
    specs = make_fleet(tmp_path / "specs", 50) + [s for s in EXAMPLES if s.endswith("/sev.toml")]
    one = cgsc("build", "-j", "1", *specs, "-o", str(tmp_path / "one"))
    two = cgsc("build", "-j", "2", *specs, "-o", str(tmp_path / "two"))
    auto = cgsc("build", *specs, "-o", str(tmp_path / "auto"))
    assert one.returncode == two.returncode == auto.returncode == 0, two.stderr
    assert (one.stdout, one.stderr.replace("/one/", "/x/")) == \
        (two.stdout, two.stderr.replace("/two/", "/x/")) == \
        (auto.stdout, auto.stderr.replace("/auto/", "/x/"))
    assert "CGS-SEV-013" in one.stderr          # the warning, reported once, in order
    assert tree(tmp_path / "one") == tree(tmp_path / "two") == tree(tmp_path / "auto")
    assert len(assert_consistent(tmp_path / "two")) == 51


def test_parallel_and_one_process_report_the_same_errors_and_write_nothing(tmp_path):
    specs = _fleet_with_problems(tmp_path)
    results = {}
    for jobs in ("1", "2"):
        for fmt in ("text", "json"):
            out = tmp_path / f"out-{jobs}"
            r = cgsc("build", "-j", jobs, "--format", fmt, *specs, "-o", str(out))
            assert r.returncode == 1 and not out.exists()
            results[jobs, fmt] = (r.stdout, r.stderr)
    assert results["1", "text"] == results["2", "text"]
    assert results["1", "json"] == results["2", "json"]
    text = results["1", "text"][1]
    assert "CGS-TARGET-002" in text and "node-0005.toml" in text and "node-0023.toml" in text


def test_parallel_check_matches_one_process_check(tmp_path):
    specs = make_fleet(tmp_path / "specs", 50)
    out = tmp_path / "out"
    assert cgsc("build", *specs, "-o", str(out)).returncode == 0
    (out / "node-0003" / "node-0003.sh").write_text("#!/bin/sh\n")
    (out / "node-0040" / "extra.txt").write_text("x\n")
    one = cgsc("check", "-j", "1", "--diff", *specs, "-o", str(out))
    two = cgsc("check", "-j", "2", "--diff", *specs, "-o", str(out))
    assert one.returncode == two.returncode == 1
    assert (one.stdout, one.stderr) == (two.stdout, two.stderr)
    assert f"--- {out}/node-0003/node-0003.sh (on disk)" in one.stdout
    assert "node-0003.sh changed" in one.stderr and "extra.txt extra" in one.stderr


def test_a_worker_killed_mid_build_leaves_the_tree_as_it_was(tmp_path):
    old = make_fleet(tmp_path / "old", 50)
    new = make_fleet(tmp_path / "new", 50, variant=" v2")
    out = tmp_path / "out"
    assert cgsc("build", *old, "-o", str(out)).returncode == 0
    before = tree(out)
    for at in (1, 7, 40):
        result = run_hooked(["build", "-j", "2", *new, "-o", str(out)], KILL_AT=at, KILL_IN="worker")
        assert result.returncode == 2 and "worker process died" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        assert tree(out) == before          # nothing written, staging cleaned
    assert cgsc("build", *new, "-o", str(out)).returncode == 0
    assert_consistent(out)


def test_sigint_stops_a_parallel_build_cleanly(tmp_path):
    import subprocess
    import sys
    import time
    specs = make_fleet(tmp_path / "specs", 400)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "cgsc", "build", "-j", "2", *specs, "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)
    proc.send_signal(signal.SIGINT)
    _o, err = proc.communicate(timeout=120)
    assert proc.returncode in (0, 130), err
    # before the commit: nothing written; during or after it (signals are held while
    # committing): the whole fleet, consistent
    if out.exists() and os.listdir(out):
        assert len(assert_consistent(out)) == 400
    else:
        assert proc.returncode == 130


def test_two_guests_installing_one_systemd_unit_are_refused_by_every_path(tmp_path):
    """Units are installed side by side in /etc/systemd/system/: a [targets.systemd]
    unit-name equal to another guest's unit (here node-0003's default, node-0003.service)
    would replace that unit. Refused like a duplicate guest name: one process or workers,
    build, --stdout, validate and check, and nothing written."""
    import json
    specs = make_fleet(tmp_path / "specs", 50)
    clash = tmp_path / "specs" / "node-0040.toml"
    clash.write_text(clash.read_text() + '\n[targets.systemd]\nunit-name = "node-0003.service"\n')
    line = clash.read_text().splitlines().index('unit-name = "node-0003.service"') + 1
    expected = (f"{clash}:{line}: targets.systemd.unit-name: 'node-0003.service' is also "
                f"installed by guest 'node-0003' (from {specs[3]}) [CGS-TARGET-003]")
    reports = set()
    for command in (["build", "-j", "1", "-o", str(tmp_path / "o1")],
                    ["build", "-j", "2", "-o", str(tmp_path / "o2")],
                    ["build", "--stdout"], ["validate"], ["check", "-j", "2"]):
        r = cgsc(*command, *specs)
        assert r.returncode == 1 and expected in r.stderr.splitlines(), (command, r.stderr)
        assert "Traceback" not in r.stderr
        reports.add(r.stderr)
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
    assert len(reports) == 1   # the same diagnostics whichever path
    # without the systemd target there is no unit to install: no clash
    assert cgsc("build", "-t", "shell", *specs, "-o", str(tmp_path / "o3")).returncode == 0
    # a unit of its own: built, every unit a distinct file
    clash.write_text(clash.read_text().replace("node-0003.service", "node-forty.service"))
    assert cgsc("build", *specs, "-o", str(tmp_path / "o4")).returncode == 0
    units = [json.loads((d / "manifest.json").read_text())["artifacts"]
             for d in (tmp_path / "o4").iterdir()]
    names = [a["file"] for arts in units for a in arts if a["target"] == "systemd"]
    assert len(names) == len(set(names)) == 50 and "node-forty.service" in names


def test_a_fleet_named_in_a_list_file_builds_as_one_named_in_arguments(tmp_path):
    """--specs-from (one path per line): the same tree and diagnostics; the floating-machine
    note names the first spec and counts the others, from either path."""
    specs = make_fleet(tmp_path / "specs", 60)
    listed = tmp_path / "fleet.txt"
    listed.write_text("".join(s + "\n" for s in specs[1:]) + "\n")   # a blank line too
    named = cgsc("build", *specs, "-o", str(tmp_path / "a"))
    from_list = cgsc("build", specs[0], "--specs-from", str(listed), "-o", str(tmp_path / "b"))
    assert named.returncode == from_list.returncode == 0, from_list.stderr
    assert named.stderr.replace("/a/", "/x/") == from_list.stderr.replace("/b/", "/x/")
    assert re.search(re.escape(specs[0]) + r":\d+: guest\.machine: warning: 'q35' floats "
                     r"\(and in 59 more spec\(s\)\) \[CGS-HOST-008\]", named.stderr), named.stderr
    assert tree(tmp_path / "a") == tree(tmp_path / "b")
    gone = cgsc("build", "--specs-from", str(tmp_path / "missing.txt"), "-o", str(tmp_path / "c"))
    assert gone.returncode == 2 and "missing.txt: No such file" in gone.stderr, gone.stderr
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    none = cgsc("build", "--specs-from", str(empty), "-o", str(tmp_path / "c"))
    assert none.returncode == 2 and "name SPEC files" in none.stderr, none.stderr
    assert not (tmp_path / "c").exists()
    at = tmp_path / "specs" / "@node.toml"     # a spec whose name starts with @ is a spec
    at.write_bytes(open(specs[0], "rb").read())
    assert cgsc("validate", str(at)).returncode == 0


def test_a_dead_worker_during_check_is_no_verdict_not_a_bug(tmp_path, monkeypatch):
    from helpers import run_cli

    from cgsc.output import fleet
    from cgsc.output.emit import WriteError

    def died(*_args, **_kw):
        raise WriteError("a worker process died (killed by a signal or out of memory)")
    monkeypatch.setattr(fleet, "check", died)
    code, _out, err = run_cli("check", *make_fleet(tmp_path / "specs", 2), "-o", str(tmp_path))
    assert code == 2 and "worker process died" in err and "nothing checked" in err
    assert "internal error" not in err
