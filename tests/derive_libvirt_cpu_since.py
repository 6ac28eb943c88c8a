"""Derive schema/libvirt-cpu-since.json: the first libvirt release whose CPU map
(src/cpu_map/, installed as /usr/share/libvirt/cpu_map) has each CPU model. libvirt's QEMU
driver refuses a <cpu><model> its map lacks ("unknown CPU model X"), even one QEMU knows.

Two kinds of input, both libvirt's own files:

    # a libvirt git mirror: every release tag vX.Y.Z, in version order (exact)
    python3 tests/derive_libvirt_cpu_since.py --git /path/to/libvirt.git > schema/libvirt-cpu-since.json
    # released CPU maps, one directory per version (e.g. from distribution packages)
    python3 tests/derive_libvirt_cpu_since.py --releases DIR > schema/libvirt-cpu-since.json

For each model: `since`, the first examined release that has it, and `absent-in`, the last
examined release before it that lacks it (null: the first examined release has it). From
every tag they are adjacent releases, so `since` is exact; from fewer releases the true
first release lies after `absent-in` and no later than `since`, and cgsc checks only what
the bounds decide. The shipped file lists the releases it was derived from and where
each came from (`inputs`). Given all of them, or a git mirror, check the shipped table:

    python3 tests/derive_libvirt_cpu_since.py --check --releases DIR   # byte for byte
    python3 tests/derive_libvirt_cpu_since.py --check --git MIRROR     # within its bounds

The test suite checks it against two real releases (tests/targets/test_libvirt_cpu_since.py).

The shipped table's release directories came from Debian's packages, each unpacked with
`apt-get download libvirt-common=VERSION` (libvirt0 before 11.x) and `dpkg-deb -x`, its
usr/share/libvirt/cpu_map copied to DIR/<upstream version>/; DIR/inputs.json says which
package each is (the same list lands in the table's `inputs`).

How libvirt lists models: since 4.7.0 src/cpu_map/index.xml names one file per model
inside <arch name='...'> (files named x86_<model>.xml, but the model's name is the one in
the file: arm_FT-2000plus.xml defines FT-2000+); before that, src/cpu/cpu_map.xml held
every <model> inline. A <model> inside a <model> names its parent, not a model.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from typing import Callable, Dict, Iterable, List, Optional, Set, Tuple

ARCHES = ("x86", "ppc64", "arm")   # libvirt's names; s390 has no CPU map (QEMU's models)


def _version(text: str) -> tuple:
    return tuple(int(x) for x in text.split("."))


def _top_models(root: ET.Element) -> List[str]:
    """<model name> elements that are models, not a model's parent reference."""
    out, stack = [], [root]
    while stack:
        el = stack.pop()
        for child in el:
            if child.tag == "model":
                if child.get("name"):
                    out.append(child.get("name"))
            else:
                stack.append(child)
    return out


def models(read: Callable[[str], Optional[bytes]]) -> Dict[str, Set[str]]:
    """arch -> model names of one release; read(path) gives a file of that release's CPU map
    directory ("index.xml", "x86_EPYC.xml") or, for the pre-4.7 layout, "cpu_map.xml"."""
    index = read("index.xml")
    single = index is None
    root = ET.fromstring(read("cpu_map.xml") if single else index)
    out: Dict[str, Set[str]] = {}
    for arch in root.findall("arch"):
        name = arch.get("name")
        if name not in ARCHES:
            continue
        found = set(_top_models(arch))
        if not single:
            for inc in arch.iter("include"):
                text = read(inc.get("filename"))
                if text is not None:
                    found.update(_top_models(ET.fromstring(text)))
        out[name] = found
    return out


def derive(releases: Iterable[Tuple[str, Dict[str, Set[str]]]], inputs: List[dict],
           source: str) -> dict:
    """releases: (version, arch -> models), any order."""
    ordered = sorted(releases, key=lambda r: _version(r[0]))
    table: Dict[str, Dict[str, dict]] = {}
    for i, (version, arches) in enumerate(ordered):
        for arch, names in arches.items():
            for model in names:
                entry = table.setdefault(arch, {})
                if model in entry:
                    continue
                before = [v for v, a in ordered[:i] if model not in a.get(arch, ())]
                entry[model] = {"since": version, "absent-in": before[-1] if before else None}
    return {"source": source, "releases": [v for v, _ in ordered], "inputs": inputs,
            "arches": {a: dict(sorted(m.items())) for a, m in sorted(table.items())}}


# -- inputs ----------------------------------------------------------------------------

def from_releases(directory: str) -> Tuple[list, list]:
    """DIR/<version>/ each a CPU map directory; DIR/inputs.json may say where each came from."""
    found = []
    for version in os.listdir(directory):
        path = os.path.join(directory, version)
        if os.path.isdir(path) and re.fullmatch(r"\d+\.\d+\.\d+", version):
            def read(name, path=path):
                f = os.path.join(path, name)
                return open(f, "rb").read() if os.path.isfile(f) else None
            found.append((version, models(read)))
    inputs = []
    described = os.path.join(directory, "inputs.json")
    if os.path.isfile(described):
        with open(described, encoding="utf-8") as fh:
            inputs = json.load(fh)
    return found, inputs


class _Blobs:
    """`git cat-file --batch`: one process for every file of every tag."""

    def __init__(self, git_dir: str):
        self.proc = subprocess.Popen(["git", "--git-dir", git_dir, "cat-file", "--batch"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def read(self, ref: str) -> Optional[bytes]:
        self.proc.stdin.write(ref.encode() + b"\n")
        self.proc.stdin.flush()
        header = self.proc.stdout.readline().split()
        if len(header) < 3 or header[1] != b"blob":
            return None
        data = self.proc.stdout.read(int(header[2]))
        self.proc.stdout.read(1)   # the newline after each object
        return data

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def from_git(git_dir: str) -> Tuple[list, list]:
    tags = subprocess.run(["git", "--git-dir", git_dir, "tag", "--list", "v*"],
                          capture_output=True, text=True, check=True).stdout.split()
    blobs = _Blobs(git_dir)
    found = []
    try:
        for tag in tags:
            if not re.fullmatch(r"v\d+\.\d+\.\d+", tag):
                continue
            split = blobs.read(f"{tag}:src/cpu_map/index.xml") is not None

            def read(name, tag=tag, split=split):
                if name == "cpu_map.xml" and not split:
                    return blobs.read(f"{tag}:src/cpu/cpu_map.xml")
                return blobs.read(f"{tag}:src/cpu_map/{name}") if split else None
            if split or blobs.read(f"{tag}:src/cpu/cpu_map.xml") is not None:
                found.append((tag[1:], models(read)))
    finally:
        blobs.close()
    return found, [{"from": "libvirt git, every release tag vX.Y.Z"}]


def dumps(table: dict) -> str:
    return json.dumps(table, indent=2, sort_keys=True) + "\n"


SOURCE = "libvirt's CPU map (src/cpu_map/index.xml and its files) per release " \
         "(tests/derive_libvirt_cpu_since.py)"

SHIPPED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "schema", "libvirt-cpu-since.json")


def check(kind: str, where: str) -> List[str]:
    """What is wrong with the shipped table against a full input: from --releases, it must
    be their derivation, byte for byte; from --git, every exact first release must lie
    within its bounds."""
    with open(SHIPPED, encoding="utf-8") as fh:
        shipped = fh.read()
    if kind == "--releases":
        releases, inputs = from_releases(where)
        return [] if shipped == dumps(derive(releases, inputs, SOURCE)) else [
            "the shipped table is not the derivation of these releases"]
    def version(text):
        return tuple(int(x) for x in text.split("."))
    exact = derive(*from_git(where), SOURCE)["arches"]
    wrong = []
    for arch, entries in json.loads(shipped)["arches"].items():
        for model, entry in entries.items():
            first = version(exact[arch][model]["since"])
            if first > version(entry["since"]) or (
                    entry["absent-in"] and first <= version(entry["absent-in"])):
                wrong.append(f"{arch} {model}: first in {exact[arch][model]['since']}, "
                             f"outside ({entry['absent-in']}, {entry['since']}]")
    return wrong


if __name__ == "__main__":
    if sys.argv[1] == "--check":  # --check --git MIRROR | --check --releases DIR
        problems = check(sys.argv[2], sys.argv[3])
        print("\n".join(problems) or "the shipped table agrees", file=sys.stderr)
        sys.exit(1 if problems else 0)
    kind, where = sys.argv[1], sys.argv[2]
    releases, inputs = from_git(where) if kind == "--git" else from_releases(where)
    sys.stdout.write(dumps(derive(releases, inputs, SOURCE)))
