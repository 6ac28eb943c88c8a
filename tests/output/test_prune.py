"""`cgsc build --prune`: guest directories cgsc made that no spec of the build makes are
removed in the build's own commit (crash-safe through its journal); anything else under
the output directory is left whole and said."""

from __future__ import annotations

import json
import os
import signal
import stat

from helpers import run_cli
from writes_helpers import assert_consistent, make_fleet, run_hooked, tree


def _build(specs, out, *args):
    code, _out, err = run_cli("build", *specs, "-o", str(out), *args)
    assert code == 0, err
    return err


def test_prune_removes_what_no_spec_builds_and_check_then_passes(tmp_path, monkeypatch):
    specs = make_fleet(tmp_path / "specs", 4)
    monkeypatch.chdir(tmp_path / "specs")   # what the manifests' spec paths are relative to
    out = tmp_path / "out"
    _build(specs, out)
    os.unlink(specs[2])                          # the spec of node-0002 is deleted
    code, _o, err = run_cli("check", "--all", "-o", str(out))
    assert code == 1 and "[CGS-CHECK-002]" in err and "--prune" in err
    err = _build(specs[:2] + specs[3:], out, "--prune")
    assert f"cgsc: pruned {out}/node-0002/" in err
    assert sorted(os.listdir(out)) == ["node-0000", "node-0001", "node-0003"]
    assert_consistent(out)
    code, _o, err = run_cli("check", "--all", "-o", str(out))
    assert code == 0 and "3 guest(s) up to date" in err, err
    # without --prune nothing is ever removed
    _build(specs[:1], out)
    assert sorted(os.listdir(out)) == ["node-0000", "node-0001", "node-0003"]


def _not_cgscs(out, guest):
    """Ways a directory under the output directory is not (or no longer) cgsc's alone."""
    def added(d):
        (d / "notes.txt").write_text("mine\n")

    def edited(d):
        sh = d / f"{d.name}.sh"
        sh.write_text(sh.read_text() + "# hand edit\n")

    def subdirectory(d):
        (d / "keep").mkdir()

    def foreign_manifest(d):
        (d / "manifest.json").write_text(json.dumps({"guest": d.name}))

    def other_guests_manifest(d):   # a copy of another guest's directory
        doc = json.loads((d / "manifest.json").read_text())
        doc["guest"] = "someone-else"
        (d / "manifest.json").write_text(json.dumps(doc, indent=2))

    def no_manifest(d):
        (d / "manifest.json").unlink()

    return [added, edited, subdirectory, foreign_manifest, other_guests_manifest, no_manifest]


def test_prune_refuses_to_touch_a_directory_cgsc_did_not_make(tmp_path):
    specs = make_fleet(tmp_path / "specs", 2)
    out = tmp_path / "out"
    for spoil in _not_cgscs(out, "node-0001"):
        _build(specs, out)
        guest = out / "node-0001"
        spoil(guest)
        before = tree(guest)
        code, _o, err = run_cli("build", specs[0], "-o", str(out), "--prune")
        assert code == 0, err
        assert tree(guest) == before, spoil.__name__          # left whole, every byte
        assert f"{guest}: (top level): warning: not pruned: " in err and "[CGS-PRUNE-001]" in err
        for entry in os.listdir(out):
            if entry != "node-0000":
                os.system(f"rm -rf '{out / entry}'")
    # a stray file, a symlink (to a guest cgsc made) and a directory of someone else's
    _build(specs, out)
    (out / "README").write_text("my notes\n")
    (tmp_path / "elsewhere").mkdir()
    (out / "link").symlink_to(tmp_path / "elsewhere")
    (out / "data").mkdir()
    (out / "data" / "x").write_text("1\n")
    code, _o, err = run_cli("build", specs[0], "-o", str(out), "--prune")
    assert code == 0 and err.count("[CGS-PRUNE-001]") == 3, err
    assert sorted(os.listdir(out)) == ["README", "data", "link", "node-0000"]
    assert os.path.islink(out / "link") and (out / "data" / "x").read_text() == "1\n"
    # --prune with --stdout has nothing to prune: a usage error
    assert run_cli("build", "--stdout", "--prune", specs[0])[0] == 2


def test_a_failed_build_prunes_nothing(tmp_path):
    specs = make_fleet(tmp_path / "specs", 3, bad={1})
    out = tmp_path / "out"
    _build([specs[0], specs[2]], out)
    before = tree(out)
    code, _o, _err = run_cli("build", specs[1], "-o", str(out), "--prune")
    assert code == 1 and tree(out) == before


def test_prune_killed_at_every_write_step_leaves_a_state_the_next_build_repairs(tmp_path, monkeypatch):
    """SIGKILL at each write step of a build that prunes two guests and rewrites one: the
    directory is whole before the commit and removed after it, never anything else; the
    next build (of either set of specs, with --prune) ends byte-identical to a fresh one."""
    specs = make_fleet(tmp_path / "specs", 3)
    kept = make_fleet(tmp_path / "kept", 1, variant=" v2")   # node-0000, changed
    monkeypatch.chdir(tmp_path / "specs")
    fresh_all, fresh_kept = tmp_path / "fresh-all", tmp_path / "fresh-kept"
    _build(specs, fresh_all)
    _build(kept, fresh_kept)
    out, count = tmp_path / "out", tmp_path / "count"
    _build(specs, out)
    assert run_hooked(["build", *kept, "-o", str(out), "--prune"], COUNT_FILE=count).returncode == 0
    assert tree(out) == tree(fresh_kept)
    steps = int(count.read_text())
    assert steps > 10
    committed_kills, seen = 0, set()
    for at in range(1, steps):
        _build(specs, out, "--prune")
        assert tree(out) == tree(fresh_all), at
        result = run_hooked(["build", *kept, "-o", str(out), "--prune"], KILL_AT=at)
        assert result.returncode == -signal.SIGKILL, (at, result.stderr)
        committed = os.path.exists(out / ".cgsc" / "journal.json")
        committed_kills += committed
        for name in ("node-0001", "node-0002"):   # whole, or on its way out: never foreign
            if (out / name).exists():
                assert set(os.listdir(out / name)) <= set(os.listdir(fresh_all / name)), (at, name)
                if not committed:
                    assert tree(out / name) == tree(fresh_all / name), (at, name)
        if committed:   # check says a build is to be finished, and the next one finishes it
            code, _o, err = run_cli("check", "--all", "-o", str(out))
            assert code == 1 and "an interrupted build is not finished" in err, (at, err)
        if at % 2:
            _build(kept, out, "--prune")
            assert tree(out) == tree(fresh_kept), at
            seen.add("kept")
        else:
            _build(specs, out, "--prune")
            assert tree(out) == tree(fresh_all), at
            seen.add("all")
        assert not (out / ".cgsc").exists()
    assert committed_kills and committed_kills < steps - 1   # kills before and after the commit
    assert seen == {"kept", "all"}


def test_a_planted_pruning_entry_removes_nothing_it_does_not_name_by_content(tmp_path):
    """A journal entry that names a directory's files by the wrong sha256 (planted, or
    from before they changed) removes none of them."""
    specs = make_fleet(tmp_path / "specs", 2)
    out = tmp_path / "out"
    _build(specs, out)
    private = out / ".cgsc"
    private.mkdir(mode=0o700)
    (private / "staging").mkdir()
    files = sorted(os.listdir(out / "node-0001"))
    journal = [{"staging": "gone"},
               {"prune": "node-0001", "files": [{"file": f, "sha256": "0" * 64} for f in files]}]
    (private / "journal.json").write_text("".join(json.dumps(e) + "\n" for e in journal))
    before = tree(out / "node-0001")
    _build(specs[:1], out)                        # recovery rolls the journal forward
    assert tree(out / "node-0001") == before
    assert stat.S_ISDIR(os.lstat(out / "node-0001").st_mode)
