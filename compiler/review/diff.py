"""`cgsc diff`: what a change to a spec does, in words, for a reviewer.

Both sides are compiled as `build` would compile them, so the comparison is of effective
values (defaults, `extends` bases and derived bits included), never of TOML text. Each
side becomes a flat list of facts (category, item, value); the diff is the facts that
were added, removed or changed, phrased for people: flags "turned on/off", launch
measurement "changed", waivers "added". Each change is placed at the spec line that says
it, so that a fleet's change made in a base is reported once, there (diff_report.py).

For a fleet (`--base REV SPEC...`) guests are matched by name: a guest the revision had
and the specs no longer build (a deleted spec, a renamed guest) is removed, one it did
not have is added.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from typing import Dict, List, NamedTuple, Optional, Tuple

from ..core import inputs
from ..core.diagnostics import SpecError, once


class Change(NamedTuple):
    category: str     # policy, measurement, firmware, devices, host, waivers, sandbox, ...
    item: str         # what changed: "debug", "disk[0]", "qmp socket"
    old: object       # None: did not exist
    new: object       # None: no longer exists
    message: str      # the change in words
    file: str = ""    # where the spec says it (the base line a fleet shares); "" derived
    line: int = 0


# The order reports list categories in: most security-relevant first.
CATEGORIES = ("mechanism", "policy", "measurement", "launch-security", "waivers", "warnings",
              "firmware", "kernel", "sandbox", "extra-args", "host", "devices", "machine")

Fact = Tuple[str, str]   # (category, item)


class RevisionError(Exception):
    """--base cannot be read: not a git repository, or no such revision (a usage error)."""


def facts(compiled, sources: Optional[Dict[Fact, object]] = None) -> Dict[Fact, object]:
    """Every security-relevant effective value of a compiled spec. `sources`, when given,
    gets the spec key each fact comes from (a key path, or a located Diagnostic for a
    warning), where the spec says it; derived facts (the launch digest, device nodes) have
    none."""
    from ..mechanisms import MECHANISMS
    plan = compiled.plan
    cgs = plan.confidential
    out: Dict[Fact, object] = {}
    keys: Dict[Fact, object] = {} if sources is None else sources

    def fact(category: str, item: str, value, key=None) -> None:
        out[(category, item)] = value
        if key is not None:
            keys[(category, item)] = key
    mech = MECHANISMS[cgs.mechanism]
    table = ("confidential", mech.name)
    fact("mechanism", "mechanism", f"{cgs.title} ({cgs.mechanism})", table)
    if mech.layout is not None:
        layout = mech.layout
        word = mech.word(compiled.data["confidential"][mech.name])
        fact("policy", f"{layout.word} word", f"{word:#x}", table + (layout.word,))
        for name, on in layout.flag_values(word):
            fact("policy", name, on, table + (layout.word, name))
        for name, shift in layout.fields:
            fact("policy", name, word >> shift & 0xFF, table + (layout.word, name))
    for key, value in cgs.summary:
        if mech.layout is None or key != mech.layout.word:
            fact("launch-security", key, value, table + (key,))
    for key, value in sorted(compiled.data["confidential"][mech.name].items()):
        if (mech.layout is None or key != mech.layout.word) and ("launch-security", key) not in out:
            fact("launch-security", key, value, table + (key,))
    attestation = getattr(plan, "attestation", None)   # added by the measurement stage
    if isinstance(attestation, dict) and attestation.get("launch-digest"):
        fact("measurement", "launch digest", attestation["launch-digest"])
    for rule, reason in plan.waivers:
        fact("waivers", rule, reason, ("waive", rule))
    for d in compiled.warnings:
        fact("warnings", d.rule, d.message, d)
    fw = plan.firmware
    fact("firmware", "mode", fw.mode, ("firmware",))
    fact("firmware", "code", fw.code, ("firmware", "code"))
    fact("firmware", "vars", fw.vars, ("firmware", "vars"))
    fact("kernel", "image", plan.kernel.image, ("kernel", "image"))
    fact("kernel", "initrd", plan.kernel.initrd, ("kernel", "initrd"))
    fact("kernel", "cmdline", plan.kernel.cmdline, ("kernel", "cmdline"))
    fact("sandbox", "-sandbox", plan.sandbox or "off", ("qemu", "sandbox"))
    for why in plan.sandbox_relaxed:
        fact("sandbox", f"relaxed: {why}", True)
    for i, arg in enumerate(plan.extra_args):
        fact("extra-args", f"[{i}]", arg, ("qemu", "extra-args", i))
    fact("host", "QMP socket", plan.qmp_socket, ("qmp", "socket"))
    fact("host", "console", plan.console.kind + (f" {plan.console.path}" if plan.console.path else ""),
         ("console",))
    fact("host", "vsock CID", plan.vsock_cid, ("vsock", "cid"))
    for i, nic in enumerate(plan.nics):
        fact("host", f"network {nic.id}", nic.mode + (f" {nic.ifname}" if nic.ifname else ""), ("net", i))
        fact("devices", f"network {nic.id}", f"{nic.model} mac {nic.mac}", ("net", i))
        for j, (protocol, address, port, guest_port) in enumerate(nic.forwards):
            fact("host", f"forward {protocol} {address}:{port}",
                 f"to guest port {guest_port}" + (" (every host address)" if address == "0.0.0.0" else ""),
                 ("net", i, "forward", j))
    for node, why in plan.device_nodes():
        fact("host", f"device node {node}", why)
    for i, disk in enumerate(plan.disks):
        fact("devices", f"disk {disk.id}", f"{disk.path} ({disk.format}, {disk.bus}, "
             f"{'read-only' if disk.readonly else 'read-write'})", ("disk", i))
    fact("machine", "guest name", plan.name, ("guest", "name"))
    fact("machine", "emulator", plan.emulator, ("qemu", "emulator"))
    fact("machine", "machine", plan.machine, ("guest", "machine"))
    fact("machine", "cpu", plan.cpu, ("guest", "cpu"))
    fact("machine", "vcpus", plan.vcpus, ("guest", "vcpus"))
    fact("machine", "memory MiB", plan.memory_mib, ("guest", "memory"))
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


def located(changes: List[Change], sources: Dict[Fact, object], old_sources: Dict[Fact, object],
            locate) -> List[Change]:
    """The changes, each at the file and line of the spec that says it (the new side's
    files; a value removed from the spec at the nearest table that is still there)."""
    from ..core.diagnostics import Diagnostic
    out = []
    for c in changes:
        key = sources.get((c.category, c.item), old_sources.get((c.category, c.item)))
        if key is None:   # derived: the launch digest, a device node
            out.append(c)
            continue
        path = key.path if isinstance(key, Diagnostic) else key
        at = locate(Diagnostic("", tuple(path), ""))
        out.append(c._replace(file=at.file, line=at.line))
    return out


def changes_between(old, new) -> List[Change]:
    """What changed from one compiled guest to the other, each change placed."""
    old_sources: Dict[Fact, object] = {}
    new_sources: Dict[Fact, object] = {}
    return located(compare(facts(old, old_sources) if old else {}, facts(new, new_sources)),
                   new_sources, old_sources, new.locate)


class GuestDiff(NamedTuple):
    name: str
    old: Optional[str]        # how the report names the old spec (REV:path); None: added
    new: Optional[str]        # the spec path; None: removed
    changes: Tuple[Change, ...] = ()
    shown: Tuple[Tuple[str, str, str], ...] = ()   # (category, item, value): what matters of
    #                                                 an added guest, what stopped of a removed one


def diff_specs(old: str, new: str) -> List[GuestDiff]:
    """Two spec files as two versions of one guest."""
    a, b = _compiled(old), _compiled(new)
    if a is None or b is None:
        raise RevisionError(f"{old if a is None else new} is an abstract base (abstract = true), "
                            "not a guest: diff the specs that extend it")
    return [GuestDiff(b.plan.name, old, new, tuple(changes_between(a, b)))]


def _compiled(spec: str, **kw):
    """compile_spec, or None for an abstract base (no guest)."""
    from ..pipeline.compile import compile_spec
    from ..spec.base import AbstractSpec
    try:
        return compile_spec(spec, **kw)
    except AbstractSpec:
        return None


# -- a fleet as of a git revision -----------------------------------------------------------

def _git(args: List[str], cwd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True)


def _repository(spec: str, rev: str) -> str:
    """The root of the git repository that holds `spec`, once `rev` is known to be in it."""
    from ..spec.paths import directory_of
    top = _git(["rev-parse", "--show-toplevel"], directory_of(spec))
    if top.returncode != 0:
        raise RevisionError(f"{spec} is not in a git repository, so --base has no revision to read")
    root = top.stdout.decode().strip()
    if _git(["rev-parse", "--verify", "--quiet", rev + "^{commit}"], root).returncode != 0:
        raise RevisionError(f"no git revision {rev!r} in {root}")
    return root


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


class Revision:
    """Files of a git revision copied under a temporary directory (the same relative
    layout), read through one `git cat-file --batch` process for the whole fleet."""

    def __init__(self, rev: str, root: str, into: str):
        self.rev, self.root, self.into = rev, root, into
        self._proc = subprocess.Popen(["git", "cat-file", "--batch"], cwd=root,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._copies: Dict[str, Optional[str]] = {}

    def close(self) -> None:
        self._proc.stdin.close()
        self._proc.stdout.close()
        self._proc.wait()

    def blob(self, rel: str) -> Optional[bytes]:
        """The spec `rel` (relative to the repository root) as of the revision, or None.
        At most a spec's bound plus one byte is kept (the loader refuses a larger one, as
        it refuses a larger file); the rest of a larger object is read past, in chunks."""
        if "\n" in rel:   # cat-file --batch reads one name a line
            with subprocess.Popen(["git", "show", f"{self.rev}:{rel}"], cwd=self.root,
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                  stdin=subprocess.DEVNULL) as proc:
                data = proc.stdout.read(inputs.SPEC.limit + 1)
                if len(data) > inputs.SPEC.limit:
                    proc.kill()   # cut at the bound: the loader refuses it by its size
                return data if proc.wait() == 0 or len(data) > inputs.SPEC.limit else None
        self._proc.stdin.write(f"{self.rev}:{rel}\n".encode("utf-8", "surrogateescape"))
        self._proc.stdin.flush()
        header = self._proc.stdout.readline().split()
        if len(header) != 3 or not header[2].isdigit():   # "<name> missing" and the like
            return None
        size = int(header[2])
        data = self._proc.stdout.read(min(size, inputs.SPEC.limit + 1))
        left = size - len(data)
        while left > 0:   # keep the batch stream in step without keeping the bytes
            chunk = self._proc.stdout.read(min(left, 1 << 20))
            if not chunk:
                break
            left -= len(chunk)
        self._proc.stdout.read(1)   # the newline after the object
        return data if header[1] == b"blob" else None

    def copy(self, rel: str) -> Optional[str]:
        """The file written under the temporary directory, or None when it did not exist."""
        if rel not in self._copies:
            data = self.blob(rel)
            path = None
            if data is not None:
                path = os.path.join(self.into, *rel.split("/"))
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as fh:
                    fh.write(data)
            self._copies[rel] = path
        return self._copies[rel]

    def spec(self, rel: str) -> Optional[str]:
        """`rel` and its extends chain, copied; the copy of `rel` (None: it did not exist)."""
        from ..spec.source import parsed
        first, seen = self.copy(rel), set()
        while rel not in seen:
            seen.add(rel)
            path = self.copy(rel)
            if path is None:
                break   # a base that did not exist then: the loader will say which
            try:   # the loader's own rules (size, UTF-8, TOML, depth): never a crash here
                base = parsed(path).get("extends")
            except SpecError:
                break   # compile_spec reports it
            if not isinstance(base, str) or not base:
                break
            rel = os.path.normpath(os.path.join(os.path.dirname(rel), base)).replace(os.sep, "/")
        return first

    def listed(self, directories: List[str]) -> List[str]:
        """The files directly in these directories (relative to the root) at the revision."""
        if not directories:
            return []
        found = _git(["ls-tree", "-z", "--name-only", self.rev, "--",
                      *[d.rstrip("/") + "/" if d else "." for d in directories]], self.root)
        return [os.fsdecode(n) for n in found.stdout.split(b"\0") if n]


def diff_against(rev: str, specs: List[str]) -> List[GuestDiff]:
    """Every guest of `specs` (working tree) against the same specs as of `rev`, and the
    guests `rev` had that are gone: a spec deleted from the directories of `specs`, or a
    spec that now builds a guest of another name. Guests are matched by name."""
    new: Dict[str, Tuple[str, object]] = {}
    problems, bases = [], set()
    for spec in specs:
        try:
            compiled = _compiled(spec)
        except SpecError as exc:
            problems += [(spec, d) for d in exc.diagnostics]
            continue
        if compiled is None:
            bases.add(spec)
        else:
            new.setdefault(compiled.plan.name, (spec, compiled))
    root = _repository(specs[0], rev)
    real_root = os.path.realpath(root)
    old: Dict[str, Tuple[str, object]] = {}
    with tempfile.TemporaryDirectory(prefix="cgsc-diff-") as tmp:
        revision = Revision(rev, root, tmp)
        try:
            named = []
            for spec in specs:
                rel = os.path.relpath(os.path.realpath(spec), real_root).replace(os.sep, "/")
                if rel.startswith("../"):
                    raise RevisionError(f"{spec} is not in the repository of {specs[0]} ({root})")
                named.append(rel)   # (an abstract base now may have been anything then)
                problems += [(f"{rev}:{rel}", d)
                             for d in _old_guest(revision, rel, old, strict=spec not in bases)]
            directories = sorted({os.path.dirname(r) for r in named})
            for rel in revision.listed(directories):
                if rel.endswith(".toml") and rel not in named and \
                        not os.path.lexists(os.path.join(root, *rel.split("/"))):
                    _old_guest(revision, rel, old, strict=False)   # a deleted spec
        finally:
            revision.close()
        if problems:   # a base's finding once, naming its guests, as validate says it
            raise SpecError(once(problems))
        return _match(old, new)


def _old_guest(revision: Revision, rel: str, old: dict, strict: bool) -> list:
    """Compile `rel` as of the revision into `old` (name -> (label, compiled)). A spec named
    on the command line that does not compile there is an error (returned, relabelled);
    a deleted file that does not is no guest that stopped (a base, another TOML file)."""
    copy = revision.spec(rel)
    if copy is None:
        return []
    label = f"{revision.rev}:{rel}"
    try:
        compiled = _compiled(copy, boot_dir=_boot_files(revision.rev, revision.root, revision.into))
    except SpecError as exc:
        if not strict:
            return []
        tmp = revision.into
        return [d.located(f"{revision.rev}:" + os.path.relpath(d.file, tmp), d.line, d.column)
                if d.file.startswith(tmp) else d for d in exc.diagnostics]
    if compiled is not None:
        old.setdefault(compiled.plan.name, (label, compiled))
    return []


def _match(old: Dict[str, tuple], new: Dict[str, tuple]) -> List[GuestDiff]:
    """Removed guests first (by name), then the guests of the working tree in spec order."""
    out = [GuestDiff(name, label, None, (), tuple(_stopped(compiled)))
           for name, (label, compiled) in sorted(old.items()) if name not in new]
    for name, (spec, compiled) in new.items():
        if name not in old:
            out.append(GuestDiff(name, None, spec, tuple(changes_between(None, compiled)),
                                 tuple(essentials(compiled))))
        else:
            out.append(GuestDiff(name, old[name][0], spec,
                                 tuple(changes_between(old[name][1], compiled))))
    return out


# -- what matters of a guest that comes or goes ---------------------------------------------

SHOWN_WHEN_ADDED = {"mechanism", "measurement", "firmware", "kernel", "waivers", "warnings",
                    "extra-args"}


def essentials(compiled) -> List[Tuple[str, str, str]]:
    """What a reviewer must see of a new guest, not every default: its mechanism, the policy
    bits that are on, its measurement inputs (firmware, kernel, launch digest, launch-security
    values that bind data), its network exposure (interfaces, forwarded host ports, vsock),
    its disks, accepted risks and warnings, and the sandbox if it is off."""
    found = facts(compiled)
    on = [item for (category, item), value in found.items() if category == "policy" and value is True]
    out = []
    for (category, item), value in found.items():
        if category == "policy":
            if item.endswith(" word"):
                out.append((category, item, f"{value}" + (f"; on: {', '.join(on)}" if on else "; no flag on")))
        elif category == "launch-security":
            if value is True or isinstance(value, str):
                out.append((category, item, _show(value)))
        elif category in SHOWN_WHEN_ADDED:
            if category != "firmware" or item != "mode":
                out.append((category, item, _show(value)))
        elif category == "host" and item.startswith(("network", "forward", "vsock")):
            out.append(("network", item, _show(value)))
        elif category == "devices" and item.startswith("disk"):
            out.append((category, item, _show(value)))
        elif category == "sandbox" and (value == "off" or item.startswith("relaxed")):
            out.append((category, item, "" if value is True else _show(value)))
    return out


def _stopped(compiled) -> List[Tuple[str, str, str]]:
    """What stops being deployed with a removed guest: its mechanism, the artifacts it was
    built into, the reference values verifiers were given, what it held on its host."""
    from ..pipeline.build import choose_targets
    chosen, _errors = choose_targets(compiled, ())
    files = [a.filename for _name, target in chosen for a in target.render(compiled.plan)]
    out = [("mechanism", "mechanism", f"{compiled.plan.confidential.title} ({compiled.plan.confidential.mechanism})"),
           ("artifacts", "no longer built", ", ".join(files) + " and manifest.json")]
    out += [(c, i, v) for c, i, v in essentials(compiled) if c in ("measurement", "network", "devices")]
    return out
