"""The input fuzz harness (harness.py), bounded: 500 cases of each input kind (2,500 in
all; CGSC_FUZZ_CASES sets the number per kind), every one ending in exit 0, 1 or 2, with
no traceback, no hang, bounded memory and nothing written outside the output directory.
The long runs and their counts are in README.md."""

from __future__ import annotations

import os

import harness

CASES = int(os.environ.get("CGSC_FUZZ_CASES", "500"))
SEED = 25


def test_every_kind_of_input_ends_in_a_clear_answer():
    counts, failures = harness.run(CASES, seed=SEED)
    print("\n" + harness.table(counts))
    assert not failures, "\n".join(
        f"{o.case.kind} #{o.case.index} (seed {SEED}): {o.failure}: cgsc {' '.join(o.case.argv)}"
        f"\n{o.stderr[-2000:]}" for o in failures[:10])
    # the generators reach more than one outcome of each kind, or they test little
    reached = {kind: {s for s in ("exit 0", "exit 1", "exit 2") if row[s]} for kind, row in counts.items()}
    assert {"exit 0", "exit 1"} <= reached["spec"], counts
    assert {"exit 1", "exit 2"} <= reached["list"], counts
    assert {"exit 1", "exit 2"} <= reached["host"] and reached["host"] & {"exit 0"}, counts
    assert {"exit 0", "exit 2"} <= reached["caps"], counts
    assert {"exit 0", "exit 1"} <= reached["firmware"], counts


def _case(*argv, **files):
    return harness.Case("spec", 0, list(argv), {k.replace("_", "."): v for k, v in files.items()})


def test_the_harness_fails_a_case_that_hangs_or_outgrows_its_memory(tmp_path, monkeypatch):
    spec = open(os.path.join(harness.ROOT, "examples", "sev-snp.toml"), "rb").read()
    runner = harness.Runner(timeout=0.001)
    try:
        assert runner.run(_case("validate", "spec.toml", spec_toml=spec)).failure.startswith("hang")
    finally:
        runner.close()
    import cgsc.cli
    real = cgsc.cli.main

    def greedy(argv, restore=True):   # cgsc, after something took more than it may
        chunk = bytearray(harness.MEMORY + (256 << 20))
        return real(argv, restore) + len(chunk) * 0
    monkeypatch.setattr(cgsc.cli, "main", greedy)
    runner = harness.Runner()
    try:
        outcome = runner.run(_case("validate", "spec.toml", spec_toml=spec))
        assert outcome.failure, outcome   # the limit holds in the child: it never got them
    finally:
        runner.close()
    monkeypatch.setattr(cgsc.cli, "main", real)
    runner = harness.Runner()
    try:
        outcome = runner.run(_case("validate", "spec.toml", spec_toml=spec))
        assert outcome.status == 0 and outcome.failure == "", outcome
    finally:
        runner.close()


def test_the_harness_judges_writes_and_statuses():
    judge = harness.Runner._judge
    same = {"spec.toml": (1, 2, 3)}
    assert judge(0, "", "", same, same, []) == ""
    assert judge(3, "", "", same, same, []) == "exit status 3"
    assert judge(-11, "", "", same, same, []) == "exit status -11"
    assert judge(1, "Traceback (most", "", same, same, []).startswith("traceback")
    assert judge(2, "cgsc: Cannot allocate memory; nothing written", "", same, same, []) \
        == "memory bound reached"
    assert judge(0, "", "open '/etc/x'\n", same, same, []).startswith("wrote outside")
    assert judge(0, "", "", same, {}, []).startswith("changed the case directory")
    assert judge(0, "", "", same, same, ["cgsc-diff-x"]).startswith("left files")
