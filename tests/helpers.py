"""Test helpers: spec discovery, the CLI in-process, real-consumer oracles (systemd splitter)."""

from __future__ import annotations

import glob
import io
import json
import os
import re
import socket
import subprocess
from contextlib import redirect_stderr, redirect_stdout
from typing import Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "examples", "*.toml"))) + sorted(
    glob.glob(os.path.join(ROOT, "examples", "fleet", "web-*.toml")))
CASES = sorted(glob.glob(os.path.join(ROOT, "tests", "cases", "*.toml")))
INVALID = sorted(glob.glob(os.path.join(ROOT, "tests", "invalid", "*.toml")))
VALID_SPECS = EXAMPLES + CASES


# The smallest valid SEV-SNP spec, for tests that add one table to it ({name}: the guest).
MINIMAL_SNP = """spec-version = 1
[guest]
name = "{name}"
cpu = "EPYC-v4"
memory = 1024
[firmware]
code = "/usr/share/ovmf/OVMF.amdsev.fd"
[confidential.sev-snp]
cbitpos = 51
reduced-phys-bits = 1
"""


# The same guest as an abstract fleet base: no name (each guest that extends it names
# itself), tables a test may append keys to ([confidential.sev-snp] last).
FLEET_BASE = "abstract = true\n" + MINIMAL_SNP.replace("spec-version = 1\n", "").replace(
    'name = "{name}"\n', "")


DATA = os.path.join(ROOT, "tests", "data")


def data_json(name: str):
    """A third-party JSON file of tests/data (kept xz-compressed, with its licence)."""
    import lzma
    with lzma.open(os.path.join(DATA, name + ".xz"), "rt", encoding="utf-8") as fh:
        return json.load(fh)


def rel(path: str) -> str:
    return os.path.relpath(path, ROOT)


def run_cli(*argv: str) -> Tuple[int, str, str]:
    """cgsc in-process: (exit status, stdout, stderr)."""
    from cgsc.cli import main
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue(), err.getvalue()


def compile_plan(path: str):
    from cgsc.pipeline.compile import compile_spec
    return compile_spec(path).plan


def render(path: str, target: str) -> str:
    from cgsc import targets
    plan = compile_plan(path)
    (artifact,) = targets.get(target).render(plan)
    return artifact.content


def assertions(path: str, keyword: str) -> List[str]:
    """The `## keyword ...` lines of a spec (quadlet-style assertion comments)."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        return [line[len("## " + keyword):].strip() for line in fh
                if line.startswith("## " + keyword + " ") or line.rstrip() == "## " + keyword]


# -- systemd: Exec*= command-line splitting, from systemd.service(5) "Command lines" ------

_C_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
              "\\": "\\", '"': '"', "'": "'", "s": " ", ";": ";"}


def systemd_split(line: str, exec_line: bool = True) -> List[str]:
    """Split an ExecStart= value the way systemd does (specifiers, quotes, C escapes, $$).
    exec_line=False: a path list (ReadWritePaths=...), where $ is not special."""
    # 1. specifiers are expanded on the whole value first; cgsc only ever writes %%.
    out, i = "", 0
    while i < len(line):
        if line[i] == "%":
            if line[i + 1:i + 2] != "%":
                raise ValueError(f"unexpected specifier at {i}: {line[i:i + 2]!r}")
            out += "%"
            i += 2
        else:
            out += line[i]
            i += 1
    # 2. words: whitespace-separated, quotes wrap a whole item, C escapes everywhere.
    words, i, text = [], 0, out
    while True:
        while i < len(text) and text[i] in " \t":
            i += 1
        if i >= len(text):
            break
        if text[i] == ";" and (i + 1 == len(text) or text[i + 1] in " \t"):
            raise ValueError("unquoted ; is a command separator")
        word, quote = "", None
        if text[i] in "\"'":
            quote = text[i]
            i += 1
        while i < len(text):
            c = text[i]
            if quote and c == quote:
                i += 1
                if i < len(text) and text[i] not in " \t":
                    raise ValueError("closing quote must be followed by whitespace")
                quote = None
                break
            if not quote and c in " \t":
                break
            if c == "\\":
                nxt = text[i + 1:i + 2]
                if nxt in _C_ESCAPES:
                    word += _C_ESCAPES[nxt]
                    i += 2
                elif nxt == "x":
                    word += chr(int(text[i + 2:i + 4], 16))
                    i += 4
                elif nxt and nxt in "01234567":
                    word += chr(int(text[i + 1:i + 4], 8))
                    i += 4
                elif nxt == "u":
                    word += chr(int(text[i + 2:i + 6], 16))
                    i += 6
                elif nxt == "U":
                    word += chr(int(text[i + 2:i + 10], 16))
                    i += 10
                else:
                    raise ValueError(f"unknown escape \\{nxt}")
                continue
            word += c
            i += 1
        if quote:
            raise ValueError("unterminated quote")
        words.append(word)
    if not exec_line:
        return words
    # 3. environment variables at exec time: $$ is a literal $, anything else a variable.
    result = []
    for w in words:
        if re.search(r"(?<!\$)\$(?!\$)", w.replace("$$", "")):
            raise ValueError(f"variable reference in {w!r}")
        result.append(w.replace("$$", "$"))
    return result


def exec_start(unit_text: str) -> List[str]:
    # "\n" only: systemd ends lines there, not at the other breaks str.splitlines() knows
    lines = [l for l in unit_text.split("\n") if l.startswith("ExecStart=")]
    assert len(lines) == 1, lines
    return systemd_split(lines[0][len("ExecStart="):])


def unit_values(unit_text: str, section: str, key: str) -> List[str]:
    current, out = None, []
    for line in unit_text.split("\n"):
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
        elif current == section and line.startswith(key + "="):
            out.append(line[len(key) + 1:])
    return out


# -- QEMU stopped before the guest runs, told to quit over QMP ----------------------------

QMP_QUIT = '{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n'


def run_qemu_quit(argv, stop: str = "-S", monitor: str = "-mon", wrap=list,
                  timeout: int = 60) -> subprocess.CompletedProcess:
    """Run QEMU (`stop`: -S or -preconfig) with a QMP monitor on a socketpair (stdio may be
    the guest console), send qmp_capabilities + quit; stdout is what the monitor said.
    monitor: "-mon" (every QEMU) or "-object" (monitor-qmp, QEMU 11.1, where -mon is
    deprecated). wrap: how to run the argv (e.g. inside the trixie root)."""
    ours, theirs = socket.socketpair()
    chardev = ["-chardev", f"socket,id=cgsccheck,fd={theirs.fileno()}"]
    mon = (["-mon", "chardev=cgsccheck,mode=control"] if monitor == "-mon" else
           ["-object", "monitor-qmp,id=cgsccheckmon,chardev=cgsccheck"])
    proc = subprocess.Popen(wrap(list(argv) + [stop] + chardev + mon), pass_fds=[theirs.fileno()],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    theirs.close()
    said = b""
    try:
        ours.settimeout(timeout)
        ours.sendall(QMP_QUIT.encode())
        while True:
            chunk = ours.recv(65536)
            if not chunk:
                break
            said += chunk
    except OSError:
        pass  # QEMU exited (or reset the connection) before or while we talked
    finally:
        ours.close()
    _out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(argv, proc.returncode, said.decode(errors="replace"), err)

