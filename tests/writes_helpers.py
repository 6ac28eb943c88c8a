"""Helpers for the write-safety and fleet tests: fleets of specs, a consistency oracle
computed from the files themselves, and cgsc run in a subprocess under an audit hook
that kills it at a chosen write step (fault injection without hooks in cgsc)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import subprocess
import sys
from typing import Dict, List

from helpers import ROOT

SNP = os.path.join(ROOT, "examples", "sev-snp.toml")

# Runs cgsc under an audit hook. KILL_AT=N: SIGKILL at the N-th write step (an open for
# writing, a rename, an unlink, a mkdir or rmdir, a chmod) of the process, or only of a
# worker process with KILL_IN=worker. The count of steps seen is written to COUNT_FILE.
RUNNER = r"""
import os, signal, sys
main_pid = os.getpid()
kill_at = int(os.environ.get("KILL_AT", "0"))
only_worker = os.environ.get("KILL_IN") == "worker"
count_file = os.environ.get("COUNT_FILE")
steps = [0]
WRITES = os.O_WRONLY | os.O_RDWR | os.O_CREAT
def hook(event, args):
    if event == "open":
        if not (len(args) > 2 and isinstance(args[2], int) and args[2] & WRITES):
            return
    elif event not in ("os.rename", "os.remove", "os.mkdir", "os.rmdir", "os.chmod"):
        return
    if only_worker and os.getpid() == main_pid:
        return
    steps[0] += 1
    if kill_at and steps[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
sys.addaudithook(hook)
from cgsc.cli import main
code = main(sys.argv[1:])
if count_file:
    os.write(os.open(count_file, os.O_WRONLY | os.O_CREAT, 0o600), str(steps[0]).encode())
sys.exit(code)
"""


def run_hooked(argv: List[str], **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", RUNNER, *argv], capture_output=True, text=True,
                          env=dict(os.environ, **{k: str(v) for k, v in env.items()}), timeout=120)


def cgsc(*argv: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cgsc", *argv], capture_output=True, text=True,
                          timeout=300, **kw)


def make_fleet(directory, count: int, variant: str = "", bad=()) -> List[str]:
    """count specs from the SEV-SNP example, guest names node-0000...; `variant` changes
    every guest's description (a second state to build over the first); indexes in
    `bad` get an invalid memory size."""
    with open(SNP, encoding="utf-8") as fh:
        base = fh.read()
    os.makedirs(directory, exist_ok=True)
    paths = []
    for i in range(count):
        # every guest's own name, sockets in its own directory (CGS-PATH-002), and its own
        # disk image (two guests on one host never write one image: CGS-FLEET-005)
        text = base.replace("payments-db", f"node-{i:04d}")
        text = text.replace('description = "Payments database"',
                            f'description = "node {i}{variant}"')
        if i in bad:
            text = text.replace('memory = "8GiB"', 'memory = "8 lots"')
        path = os.path.join(str(directory), f"node-{i:04d}.toml")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        paths.append(path)
    return paths


# cgsc's cache in the output directory (output/cache.py): not the output's state
CACHE_FILES = tuple(os.path.join(".cgsc", f) for f in ("cache.json", "key", ".gitignore"))


def no_build_state(out) -> bool:
    """OUT/.cgsc holds nothing of a build (staging, journal): it is absent, or holds the
    cache only."""
    private = os.path.join(str(out), ".cgsc")
    return not os.path.exists(private) or set(os.listdir(private)) <= {
        os.path.basename(f) for f in CACHE_FILES}


def tree(root) -> Dict[str, tuple]:
    """relative path -> (bytes, mode) of every file, and every directory as None; cgsc's
    cache (CACHE_FILES, and .cgsc when it holds nothing else) is not listed."""
    out: Dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = None
        for f in filenames:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[os.path.relpath(p, root)] = (fh.read(), stat.S_IMODE(os.lstat(p).st_mode))
    for name in CACHE_FILES:
        out.pop(name, None)
    if ".cgsc" in out and not any(p.startswith(".cgsc" + os.sep) for p in out):
        del out[".cgsc"]
    return out


def assert_consistent(root) -> Dict[str, dict]:
    """Every guest directory holds exactly its manifest's files, each with the recorded
    sha256 and mode; nothing else is left in the output directory. Returns the manifests."""
    manifests = {}
    for name in sorted(os.listdir(root)):
        if name == ".cgsc" and sorted(os.listdir(os.path.join(root, name))) == sorted(
                os.path.basename(f) for f in CACHE_FILES if os.path.exists(os.path.join(root, f))):
            continue   # cgsc's cache, nothing else
        guest = os.path.join(root, name)
        assert os.path.isdir(guest) and not os.path.islink(guest), f"stray {guest}"
        assert re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", name), f"stray entry {guest}"
        with open(os.path.join(guest, "manifest.json"), encoding="utf-8") as fh:
            manifest = json.load(fh)
        listed = {a["file"]: a for a in manifest["artifacts"]}
        assert sorted(os.listdir(guest)) == sorted(list(listed) + ["manifest.json"]), guest
        for file, a in listed.items():
            with open(os.path.join(guest, file), "rb") as fh:
                assert hashlib.sha256(fh.read()).hexdigest() == a["sha256"], f"{guest}/{file}"
            assert stat.S_IMODE(os.stat(os.path.join(guest, file)).st_mode) == int(a["mode"], 8)
        manifests[name] = manifest
    return manifests
