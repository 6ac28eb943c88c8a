"""Conflicts between guests of one build (cgsc.pipeline.conflicts): each kind refused when
two guests on one host share it (tests/invalid/CGS-FLEET-*.toml show the messages), and
accepted when they do not: other values, other hosts, read-only sharing, user networking.
No false positive on the project's examples or on 1,000 guests with distinct values."""

from __future__ import annotations

import glob
import json
import os
import re
import shlex

import pytest
from helpers import EXAMPLES, ROOT, assertions, run_cli
from writes_helpers import cgsc, make_fleet

INVALID = os.path.join(ROOT, "tests", "invalid")
PAIRS = {os.path.basename(p): shlex.split(assertions(p, "args:")[0])
         for p in sorted(glob.glob(os.path.join(INVALID, "CGS-FLEET-*.toml")))
         + [os.path.join(INVALID, "CGS-TARGET-003.toml")]}


def _copy_pair(pair, tmp_path, hosts=None):
    """The two specs of an invalid pair (and the base they extend) under tmp_path; with
    `hosts`, each says which host it runs on."""
    (tmp_path / "support").mkdir(exist_ok=True)
    base = os.path.join(INVALID, "support", "base-snp.toml")
    (tmp_path / "support" / "base-snp.toml").write_text(open(base).read())
    out = []
    for i, rel in enumerate(pair):
        text = open(os.path.join(INVALID, rel)).read()
        if hosts:
            text = text.replace("[guest]\n", f'[guest]\nhost = "{hosts[i]}"\n', 1)
        (tmp_path / rel).write_text(text)
        out.append(str(tmp_path / rel))
    return out


@pytest.mark.parametrize("case", sorted(PAIRS))
def test_a_conflict_on_one_host_is_refused_and_on_two_hosts_is_not(case, tmp_path):
    rule = re.match(r"CGS-[A-Z]+-\d{3}", case).group(0)
    specs = _copy_pair(PAIRS[case], tmp_path)
    code, _out, err = run_cli("validate", *specs)
    assert code == 1 and f"[{rule}]" in err, err
    specs = _copy_pair(PAIRS[case], tmp_path, hosts=("hv-1", "hv-1"))
    code, _out, err = run_cli("validate", *specs)
    assert code == 1 and f"[{rule}]" in err, err
    assert ("on host 'hv-1'" in err) is (rule != "CGS-FLEET-007"), err
    specs = _copy_pair(PAIRS[case], tmp_path, hosts=("hv-1", "hv-2"))
    code, _out, err = run_cli("validate", *specs)
    if rule == "CGS-FLEET-007":   # a UUID is the guest's, whatever its host
        assert code == 1 and f"[{rule}]" in err, err
    else:
        assert code == 0, err


def _guest(tmp_path, name, body):
    spec = tmp_path / f"{name}.toml"
    spec.write_text('extends = "base-snp.toml"\n[guest]\nname = "' + name + '"\n' + body)
    return str(spec)


def _two(tmp_path, body_a, body_b, *args):
    base = os.path.join(INVALID, "support", "base-snp.toml")
    (tmp_path / "base-snp.toml").write_text(open(base).read())
    specs = [_guest(tmp_path, "a", body_a), _guest(tmp_path, "b", body_b)]
    return run_cli("validate", *args, *specs)


FORWARD = '[[net]]\nmode = "user"\nforward = [{{ host-port = {port}, guest-port = 22{extra} }}]\n'


@pytest.mark.parametrize("a, b, clash", [
    (dict(port=22, extra=""), dict(port=22, extra=""), True),                   # same address
    (dict(port=22, extra=', host-address = "0.0.0.0"'), dict(port=22, extra=', host-address = "10.0.0.2"'), True),
    (dict(port=22, extra=', host-address = "10.0.0.2"'), dict(port=22, extra=', host-address = "0.0.0.0"'), True),
    (dict(port=22, extra=', host-address = "10.0.0.2"'), dict(port=22, extra=', host-address = "10.0.0.3"'), False),
    (dict(port=22, extra=""), dict(port=22, extra=', protocol = "udp"'), False),
    (dict(port=22, extra=', host-address = "0.0.0.0"'), dict(port=23, extra=', host-address = "0.0.0.0"'), False),
])
def test_port_forwards_clash_by_protocol_port_and_overlapping_address(a, b, clash, tmp_path):
    code, _out, err = _two(tmp_path, FORWARD.format(**a), FORWARD.format(**b))
    assert (code, "[CGS-FLEET-001]" in err) == ((1, True) if clash else (0, False)), err


@pytest.mark.parametrize("a, b, clash", [
    ('[[disk]]\npath = "/srv/img.raw"\nformat = "raw"\nreadonly = true\n',
     '[[disk]]\npath = "/srv/img.raw"\nformat = "raw"\nreadonly = true\n', False),   # readers share
    ('[[disk]]\npath = "/srv/img.raw"\nformat = "raw"\n',
     '[[disk]]\npath = "/srv/img.raw"\nformat = "raw"\n', True),
    ('[[disk]]\npath = "/srv/img.raw"\nformat = "raw"\nreadonly = true\n',
     '[[disk]]\npath = "/srv/img.raw"\nformat = "raw"\n', True),                    # the writer second
    ('[[disk]]\npath = "/srv/a.raw"\nformat = "raw"\n', '[[disk]]\npath = "/srv/b.raw"\nformat = "raw"\n', False),
    ('[kernel]\nimage = "/srv/vmlinuz"\n', '[kernel]\nimage = "/srv/vmlinuz"\n', False),  # read-only
    ('[kernel]\nimage = "/srv/vmlinuz"\n', '[[disk]]\npath = "/srv/vmlinuz"\nformat = "raw"\n', True),
    ('[console]\nserial = "file"\npath = "/var/log/cgsc/a/console.log"\n',
     '[[disk]]\npath = "/var/log/cgsc/a/console.log"\nformat = "raw"\nreadonly = true\n', True),
])
def test_a_file_one_guest_writes_is_its_own(a, b, clash, tmp_path):
    code, _out, err = _two(tmp_path, a, b)
    assert (code, "[CGS-FLEET-005]" in err) == ((1, True) if clash else (0, False)), err


def test_user_networks_may_share_a_mac_and_distinct_values_never_clash(tmp_path):
    mac = '[[net]]\nmode = "{mode}"\n{extra}mac = "52:54:00:00:00:01"\n'
    code, _out, err = _two(tmp_path, mac.format(mode="user", extra=""), mac.format(mode="user", extra=""))
    assert code == 0, err   # each QEMU's user network is its own
    code, _out, err = _two(tmp_path, mac.format(mode="user", extra=""),
                           mac.format(mode="bridge", extra='bridge = "br0"\n'))
    assert code == 0, err
    distinct = ('[vsock]\ncid = {cid}\n[[net]]\nmode = "tap"\ntap = "tap-{n}"\n'
                '[[disk]]\npath = "/srv/guests/{n}.qcow2"\nformat = "qcow2"\n')
    code, _out, err = _two(tmp_path, distinct.format(cid=3, n="a"), distinct.format(cid=4, n="b"))
    assert code == 0, err


def test_guests_built_only_for_kubevirt_claim_no_host(tmp_path):
    """KubeVirt runs each guest in a pod of its own: no host port, file or tap is shared."""
    kv = ('[targets]\nbuild = ["kubevirt"]\n[[net]]\nmode = "user"\n'
          '[[disk]]\npath = "/srv/img.qcow2"\nformat = "qcow2"\nkubevirt = { pvc = "{pvc}" }\n')
    code, _out, err = _two(tmp_path, kv.replace("{pvc}", "a"), kv.replace("{pvc}", "b"))
    assert code == 0, err
    code, _out, err = _two(tmp_path, kv.replace("{pvc}", "a"), kv.replace("{pvc}", "b"),
                           "-t", "shell")
    assert code == 1 and "[CGS-FLEET-005]" in err, err


def test_a_shared_directory_is_a_conflict():
    """CGS-FLEET-006. A spec cannot give one guest another's directory (CGS-PATH-002 keeps
    sockets under the guest's own name), so the kind is shown with claims made by hand:
    the registry still refuses it, should a directory ever be shared another way."""
    from cgsc.pipeline.conflicts import Claim, Owner, check
    spec = os.path.join(ROOT, "examples", "sev-snp.toml")
    run = Claim("directory", "/run/cgsc/shared", ("qmp", "socket"), "directory")
    other = Claim("directory", "/run/cgsc/other", ("qmp", "socket"), "directory")
    found = check([(0, Owner(spec, "a", "", (run,))), (1, Owner(spec, "b", "", (run,)))])
    (where, d), = found
    assert where == spec and d.rule == "CGS-FLEET-006" and d.line > 0
    assert d.message == "directory /run/cgsc/shared is also used by guest 'a' (from this same line)"
    assert check([(0, Owner(spec, "a", "", (run,))), (1, Owner(spec, "b", "", (other,)))]) == []
    assert check([(0, Owner(spec, "a", "hv-1", (run,))), (1, Owner(spec, "b", "hv-2", (run,)))]) == []
    code, _out, err = run_cli("validate", *_socket_elsewhere())
    assert code == 1 and "[CGS-PATH-002]" in err


def _socket_elsewhere():
    import tempfile
    directory = tempfile.mkdtemp()
    spec = os.path.join(directory, "x.toml")
    with open(os.path.join(INVALID, "support", "base-snp.toml")) as fh, open(spec, "w") as out:
        out.write(fh.read().replace('name = "base"', 'name = "x"')
                  + '[qmp]\nsocket = "/run/cgsc/y/qmp.sock"\n')
    return [spec]


def test_the_projects_examples_build_together(tmp_path):
    specs = EXAMPLES + sorted(glob.glob(os.path.join(ROOT, "examples", "kubevirt", "*.toml")))
    code, _out, err = run_cli("validate", *specs)
    assert code == 0 and "CGS-FLEET" not in err and "CGS-TARGET-00" not in err, err


def test_a_thousand_distinct_guests_never_clash_and_one_shared_value_is_found(tmp_path, monkeypatch):
    """The guests' claims are compared through hashes: distinct guests are never compiled
    a second time (a hash that only seems shared is dropped without compiling anyone)."""
    from cgsc.output import fleet
    specs = make_fleet(tmp_path / "specs", 1000)
    compiled_again = []
    original = fleet._owner
    monkeypatch.setattr(fleet, "_owner", lambda path, job: compiled_again.append(path) or original(path, job))
    code, _out, err = run_cli("build", "-j", "1", *specs, "-o", str(tmp_path / "out"))
    assert code == 0 and compiled_again == [], err
    last = tmp_path / "specs" / "node-0999.toml"
    last.write_text(last.read_text() + "[vsock]\ncid = 77\n")
    first = tmp_path / "specs" / "node-0000.toml"
    first.write_text(first.read_text() + "[vsock]\ncid = 77\n")
    code, _out, err = run_cli("build", "-j", "1", *specs, "-o", str(tmp_path / "out2"))
    assert code == 1 and err.count("[CGS-FLEET-002]") == 1, err
    assert f"{last}:" in err and "guest 'node-0000'" in err
    assert sorted(compiled_again) == sorted([str(first), str(last)])


def test_workers_lists_and_one_process_find_the_same_conflicts(tmp_path):
    specs = make_fleet(tmp_path / "specs", 60)
    for i in (5, 41):
        spec = tmp_path / "specs" / f"node-{i:04d}.toml"
        spec.write_text(spec.read_text().replace('mode = "bridge"', 'mode = "bridge"\nmac = "52:54:00:aa:bb:cc"'))
    listed = tmp_path / "fleet.txt"
    listed.write_text("".join(s + "\n" for s in specs))
    results = set()
    for args in (["-j", "1", *specs], ["-j", "2", *specs], ["-j", "2", "--specs-from", str(listed)]):
        for command in ("build", "check"):
            r = cgsc(command, *args, "-o", str(tmp_path / "out"), "--format", "json")
            assert r.returncode == 1, r.stderr
            results.add(r.stdout)
    (found,) = [json.loads(out) for out in results]
    assert [(d["rule"], os.path.basename(d["file"])) for d in found] == [("CGS-FLEET-003", "node-0041.toml")]
    assert not (tmp_path / "out").exists()


def test_check_all_compares_the_specs_named_with_every_guest_under_the_output(tmp_path, monkeypatch):
    """pre-commit passes the changed files: a changed spec that now takes another guest's
    vsock CID is a conflict though the other guest is only found through its manifest."""
    import subprocess
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / "base-snp.toml").write_text(open(os.path.join(INVALID, "support", "base-snp.toml")).read())
    a = _guest(repo, "a", "[vsock]\ncid = 5\n")
    b = _guest(repo, "b", "[vsock]\ncid = 6\n")
    monkeypatch.chdir(repo)
    assert run_cli("build", a, b, "-o", "out")[0] == 0
    (repo / "b.toml").write_text((repo / "b.toml").read_text().replace("cid = 6", "cid = 5"))
    code, _out, err = run_cli("check", "--all", "-o", "out", b)
    assert code == 1 and err.count("[CGS-FLEET-002]") == 1, err
    assert "a.toml:5" in err and "b.toml:5" in err     # both guests' lines
