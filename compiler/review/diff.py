"""`cgsc diff`: what a change to a spec does, in words, for a reviewer.

Both sides are compiled as `build` would compile them, so the comparison is of effective
values (defaults, `extends` bases and derived bits included), never of TOML text. Each
side becomes a flat list of facts (category, item, value); the diff is the facts that
were added, removed or changed, phrased for people: flags "turned on/off", launch
measurement "changed", waivers "added".
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from typing import Dict, List, NamedTuple, Optional, Tuple

from ..core import inputs
from ..core.diagnostics import SpecError


class Change(NamedTuple):
    category: str     # policy, measurement, firmware, devices, host, waivers, sandbox, ...
    item: str         # what changed: "debug", "disk[0]", "qmp socket"
    old: object       # None: did not exist
    new: object       # None: no longer exists
    message: str      # the change in words


# The order reports list categories in: most security-relevant first.
CATEGORIES = ("mechanism", "policy", "measurement", "launch-security", "waivers", "warnings",
              "firmware", "kernel", "sandbox", "extra-args", "host", "devices", "machine")

Fact = Tuple[str, str]   # (category, item)


class RevisionError(Exception):
    """--base cannot be read: not a git repository, or no such revision (a usage error)."""


def facts(compiled) -> Dict[Fact, object]:
    """Every security-relevant effective value of a compiled spec."""
    from ..mechanisms import MECHANISMS
    plan = compiled.plan
    cgs = plan.confidential
    out: Dict[Fact, object] = {("mechanism", "mechanism"): f"{cgs.title} ({cgs.mechanism})"}
    mech = MECHANISMS[cgs.mechanism]
    if mech.layout is not None:
        layout = mech.layout
        word = mech.word(compiled.data["confidential"][mech.name])
        out[("policy", f"{layout.word} word")] = f"{word:#x}"
        for name, on in layout.flag_values(word):
            out[("policy", name)] = on
        for name, shift in layout.fields:
            out[("policy", name)] = word >> shift & 0xFF
    for key, value in cgs.summary:
        if mech.layout is None or key != mech.layout.word:
            out[("launch-security", key)] = value
    for key, value in sorted(compiled.data["confidential"][mech.name].items()):
        if (mech.layout is None or key != mech.layout.word) and ("launch-security", key) not in out:
            out[("launch-security", key)] = value
    attestation = getattr(plan, "attestation", None)   # added by the measurement stage
    if isinstance(attestation, dict) and attestation.get("launch-digest"):
        out[("measurement", "launch digest")] = attestation["launch-digest"]
    for rule, reason in plan.waivers:
        out[("waivers", rule)] = reason
    for d in compiled.warnings:
        out[("warnings", d.rule)] = d.message
    fw = plan.firmware
    out[("firmware", "mode")] = fw.mode
    out[("firmware", "code")] = fw.code
    out[("firmware", "vars")] = fw.vars
    out[("kernel", "image")] = plan.kernel.image
    out[("kernel", "initrd")] = plan.kernel.initrd
    out[("kernel", "cmdline")] = plan.kernel.cmdline
    out[("sandbox", "-sandbox")] = plan.sandbox or "off"
    for why in plan.sandbox_relaxed:
        out[("sandbox", f"relaxed: {why}")] = True
    for i, arg in enumerate(plan.extra_args):
        out[("extra-args", f"[{i}]")] = arg
    out[("host", "QMP socket")] = plan.qmp_socket
    out[("host", "console")] = plan.console.kind + (f" {plan.console.path}" if plan.console.path else "")
    out[("host", "vsock CID")] = plan.vsock_cid
    for nic in plan.nics:
        out[("host", f"network {nic.id}")] = nic.mode + (f" {nic.ifname}" if nic.ifname else "")
        out[("devices", f"network {nic.id}")] = f"{nic.model} mac {nic.mac}"
    for node, why in plan.device_nodes():
        out[("host", f"device node {node}")] = why
    for disk in plan.disks:
        out[("devices", f"disk {disk.id}")] = (f"{disk.path} ({disk.format}, {disk.bus}, "
                                               f"{'read-only' if disk.readonly else 'read-write'})")
    out[("machine", "guest name")] = plan.name
    out[("machine", "emulator")] = plan.emulator
    out[("machine", "machine")] = plan.machine
    out[("machine", "cpu")] = plan.cpu
    out[("machine", "vcpus")] = plan.vcpus
    out[("machine", "memory MiB")] = plan.memory_mib
    return {k: v for k, v in out.items() if v is not None}


def _show(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _words(category: str, item: str, old, new) -> str:
    if isinstance(old, bool) or isinstance(new, bool):
        if category == "policy" and (old is None or new is None):
            return f"{item}: {_show(new if old is None else old)} ({'new flag' if old is None else 'flag gone'})"
        if category == "policy":
            turned = "on" if new else "off"
            return f"{item} turned {turned}" + (" (was off)" if new and old is False else
                                                " (was on)" if not new and old is True else "")
    if category == "measurement":
        return (f"launch digest changed: {old} -> {new}" if old and new else
                f"launch digest {'added' if new else 'removed'}: {new or old}")
    if category == "waivers":
        return (f"waiver {item} added: {new!r}" if old is None else
                f"waiver {item} removed (was {old!r})" if new is None else
                f"waiver {item} reason changed: {old!r} -> {new!r}")
    if category == "warnings":
        return (f"new warning {item}: {new}" if old is None else
                f"warning {item} gone (was: {old})" if new is None else f"warning {item}: {new}")
    if category == "sandbox" and item.startswith("relaxed: "):
        return f"sandbox {'relaxed' if new else 'no longer relaxed'}: {item[9:]}"
    if old is None:
        return f"{item} added: {_show(new)}"
    if new is None:
        return f"{item} removed (was {_show(old)})"
    return f"{item} changed: {_show(old)} -> {_show(new)}"


def compare(old: Dict[Fact, object], new: Dict[Fact, object]) -> List[Change]:
    order = {c: i for i, c in enumerate(CATEGORIES)}
    keys = sorted(set(old) | set(new), key=lambda k: (order.get(k[0], len(order)), k[1]))
    out = []
    for category, item in keys:
        a, b = old.get((category, item)), new.get((category, item))
        if a != b:
            out.append(Change(category, item, a, b, _words(category, item, a, b)))
    return out


class Side(NamedTuple):
    label: str            # how the report names it: a path, or REV:path
    compiled: object      # None: the spec does not exist on this side


def diff_specs(old: str, new: str) -> Tuple[Side, Side, List[Change]]:
    from ..pipeline.compile import compile_spec
    a, b = Side(old, compile_spec(old)), Side(new, compile_spec(new))
    return a, b, compare(facts(a.compiled), facts(b.compiled))


# -- a spec as of a git revision ------------------------------------------------------------

def _git(args: List[str], cwd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True)


def _repository(spec: str, rev: str) -> str:
    """The root of the git repository that holds `spec`, once `rev` is known to be in it."""
    here = os.path.dirname(os.path.abspath(spec))
    top = _git(["rev-parse", "--show-toplevel"], here)
    if top.returncode != 0:
        raise RevisionError(f"{spec} is not in a git repository, so --base has no revision to read")
    root = top.stdout.decode().strip()
    if _git(["rev-parse", "--verify", "--quiet", rev + "^{commit}"], root).returncode != 0:
        raise RevisionError(f"no git revision {rev!r} in {root}")
    return root


def _spec_blob(name: str, root: str) -> Tuple[int, bytes]:
    """(git's exit status, the blob `rev:path`) read by the input boundary's bound for a
    spec, plus one byte: a larger blob is cut there and the loader refuses it as it
    refuses a larger file. git is stopped there, never read to its end."""
    with subprocess.Popen(["git", "show", name], cwd=root, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL) as proc:
        data = proc.stdout.read(inputs.SPEC.limit + 1)
        if len(data) > inputs.SPEC.limit:
            proc.kill()
        return proc.wait() if len(data) <= inputs.SPEC.limit else 0, data


def _blob_to(fh, blob: str, root: str) -> int:
    """Copy a blob into `fh` in chunks, at most a boot file's bound plus one byte (the
    measure stage refuses a larger file, as it refuses one in the working tree); git's
    exit status (0 when cut at the bound)."""
    with subprocess.Popen(["git", "cat-file", "blob", blob], cwd=root, stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL) as proc:
        left = inputs.BOOT_FILE.limit + 1
        while left:
            chunk = proc.stdout.read(min(left, 1 << 20))
            if not chunk:
                break
            fh.write(chunk)
            left -= len(chunk)
        if not left:
            proc.kill()
            proc.wait()
            return 0
        return proc.wait()


def _boot_files(rev: str, root: str, into: str):
    """`boot_dir` for compile_spec of a spec materialized under `into`: a relative
    [measurement] file that `rev` tracks (a regular file) is read as of `rev` (written under
    `into`, beside the spec copy); any other (boot files are build inputs, usually not
    committed) is read from the working tree, relative to the spec file's own directory."""
    def boot_dir(directory: str, given: str) -> str:
        rel_dir = os.path.relpath(directory, into)
        tree_dir = os.path.join(os.path.realpath(root), rel_dir)
        target = os.path.normpath(os.path.join(rel_dir, given)).replace(os.sep, "/")
        if target.startswith("../") or target in ("..", "."):
            return tree_dir            # outside the repository: never tracked
        listed = _git(["ls-tree", "-z", rev, "--", target], root).stdout.split(b"\t", 1)[0].split()
        if len(listed) != 3 or listed[0] not in (b"100644", b"100755") or listed[1] != b"blob":
            return tree_dir
        path = os.path.join(into, *target.split("/"))
        if os.path.isfile(path):   # a spec copy (a spec is no boot file)
            return directory
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:   # streamed: a boot file may be as large as 1 GiB
            if _blob_to(fh, listed[2].decode(), root) != 0:
                fh.truncate(0)
                os.unlink(path)
                return tree_dir
        return directory
    return boot_dir


def _materialize(rev: str, spec: str, into: str, root: str) -> Optional[str]:
    """Write `spec` and its extends chain as of `rev` under `into` (same relative
    layout); the copy of `spec`, or None when the spec did not exist at `rev`."""
    from ..spec.source import parsed
    rel = os.path.relpath(os.path.realpath(spec), os.path.realpath(root)).replace(os.sep, "/")
    first, seen = None, set()
    while rel not in seen:
        seen.add(rel)
        status, content = _spec_blob(f"{rev}:{rel}", root)
        if status != 0:
            return first  # the spec (or a base) did not exist then: the loader will say which
        path = os.path.join(into, *rel.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as fh:
            fh.write(content)
        first = first or path
        try:   # the loader's own rules (size, UTF-8, TOML, depth): never a crash here
            base = parsed(path).get("extends")
        except SpecError:
            break   # compile_spec reports it
        if not isinstance(base, str) or not base:
            break
        rel = os.path.normpath(os.path.join(os.path.dirname(rel), base)).replace(os.sep, "/")
    return first


def diff_against(rev: str, spec: str) -> Tuple[Side, Side, List[Change]]:
    from ..pipeline.compile import compile_spec
    new = Side(spec, compile_spec(spec))
    root = _repository(spec, rev)
    with tempfile.TemporaryDirectory(prefix="cgsc-diff-") as tmp:
        copy = _materialize(rev, spec, tmp, root)
        label = f"{rev}:{spec}"
        if copy is None:
            old = Side(label, None)
        else:
            try:
                old = Side(label, compile_spec(copy, boot_dir=_boot_files(rev, root, tmp)))
            except SpecError as exc:  # name the revision, not the temporary copy
                raise SpecError([d.located(f"{rev}:" + os.path.relpath(d.file, tmp), d.line, d.column)
                                 if d.file.startswith(tmp) else d for d in exc.diagnostics])
    return old, new, compare(facts(old.compiled) if old.compiled else {}, facts(new.compiled))


# -- reports ---------------------------------------------------------------------------------

def as_dict(old: Side, new: Side, changes: List[Change]) -> dict:
    return {"guest": new.compiled.plan.name, "old": old.label, "new": new.label,
            "new-spec": old.compiled is None,
            "changes": [{"category": c.category, "item": c.item, "old": c.old, "new": c.new,
                         "message": c.message} for c in changes]}


def to_text(reports: List[dict]) -> str:
    out = []
    for r in reports:
        head = f"{r['guest']}: {r['old']} -> {r['new']}"
        if r["new-spec"]:
            head += " (a new spec)"
        out.append(head)
        out += [f"  {c['category']}: {c['message']}" for c in r["changes"]] or ["  no security-relevant change"]
    return "\n".join(out) + "\n"


def to_json(reports: List[dict]) -> str:
    import json
    return json.dumps(reports, indent=2, ensure_ascii=False) + "\n"


def to_markdown(reports: List[dict]) -> str:
    def cell(text) -> str:
        return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").replace("`", "'")
    out = []
    for r in reports:
        out.append(f"### cgsc diff: {cell(r['guest'])}\n")
        out.append(f"{cell(r['old'])} → {cell(r['new'])}" + (" (a new spec)" if r["new-spec"] else "") + "\n")
        if not r["changes"]:
            out.append("No security-relevant change.\n")
            continue
        out.append("| category | change |\n|---|---|")
        out += [f"| {cell(c['category'])} | {cell(c['message'])} |" for c in r["changes"]]
        out.append("")
    return "\n".join(out) + "\n"


def to_github(reports: List[dict]) -> str:
    from .report import _gh_data, _gh_property
    lines = []
    for r in reports:
        for c in r["changes"]:
            lines.append(f"::notice file={_gh_property(r['new'])},title={_gh_property('cgsc diff: ' + c['category'])}"
                         f"::{_gh_data(r['guest'] + ': ' + c['message'])}")
    return "".join(line + "\n" for line in lines)


RENDER = {"text": to_text, "json": to_json, "markdown": to_markdown, "github": to_github}

