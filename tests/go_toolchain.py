"""Go with Debian's go-sev-guest and go-tdx-guest sources, to build tests/go/verifiers and
the libraries' own tools/check CLIs, offline, in GOPATH mode (Debian's layout).

Found in the Debian 13 root `.ci/trixie-root` makes ($CGSC_TRIXIE_ROOT, default
/var/cache/cgsc/trixie-root; complete when .cgsc-stamp is there): its Go toolchain is run
from where it lies (GOROOT follows the binary), with GOPATH its /usr/share/gocode; the
root is only read. Otherwise a `go` on PATH with the packages in /usr/share/gocode
(golang-go, golang-github-google-go-sev-guest-dev, golang-github-google-go-tdx-guest-dev on
Debian 13, with the go:embed *.pem files restored as .ci/trixie-root does). The build cache
is kept outside the root ($CGSC_GO_CACHE, default ~/.cache/cgsc/go-build).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import NamedTuple, Optional, Tuple

ROOT_DEFAULT = "/var/cache/cgsc/trixie-root"
HERE = os.path.dirname(os.path.abspath(__file__))
HARNESS = os.path.join(HERE, "go", "verifiers")
# Files the build needs: the packaged sources and the go:embed files Debian leaves out.
NEEDED = ("src/github.com/google/go-sev-guest/verify/trust/ask_ark_milan.pem",
          "src/github.com/google/go-sev-guest/testing/data/keys/vcek_private_key.pem",
          "src/github.com/google/go-tdx-guest/verify/trusted_root.pem")


class Toolchain(NamedTuple):
    go: str
    gopath: str

    def env(self, cache: str, home: str) -> dict:
        return {"PATH": "/usr/bin:/bin", "HOME": home, "GO111MODULE": "off",
                "GOPATH": self.gopath, "GOPROXY": "off", "GOTOOLCHAIN": "local", "GOFLAGS": "",
                "GOTELEMETRY": "off", "CGO_ENABLED": "0", "GOCACHE": cache}


def find() -> Tuple[Optional[Toolchain], str]:
    """(the toolchain, "") or (None, why there is none)."""
    root = os.environ.get("CGSC_TRIXIE_ROOT") or ROOT_DEFAULT
    candidates = []
    if os.path.isfile(os.path.join(root, ".cgsc-stamp")):
        candidates.append(Toolchain(os.path.join(root, "usr", "lib", "go", "bin", "go"),
                                    os.path.join(root, "usr", "share", "gocode")))
    if shutil.which("go"):
        candidates.append(Toolchain(shutil.which("go"), "/usr/share/gocode"))
    for tool in candidates:
        if os.access(tool.go, os.X_OK) and all(os.path.isfile(os.path.join(tool.gopath, n))
                                               for n in NEEDED):
            return tool, ""
    return None, (f"Go with Debian's go-sev-guest and go-tdx-guest not found (no complete "
                  f"Debian 13 root at {root}: run .ci/trixie-root, or set CGSC_TRIXIE_ROOT)")


class Built(NamedTuple):
    harness: str      # tests/go/verifiers
    sev_check: str    # github.com/google/go-sev-guest/tools/check
    tdx_check: str    # github.com/google/go-tdx-guest/tools/check
    gopath: str


def build(tool: Toolchain, out: str) -> Built:
    cache = os.environ.get("CGSC_GO_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "cgsc", "go-build")
    os.makedirs(cache, exist_ok=True)
    env = tool.env(cache, out)
    built = Built(os.path.join(out, "verifiers"), os.path.join(out, "sev-check"),
                  os.path.join(out, "tdx-check"), tool.gopath)
    for target, package in ((built.harness, "."),
                            (built.sev_check, "github.com/google/go-sev-guest/tools/check"),
                            (built.tdx_check, "github.com/google/go-tdx-guest/tools/check")):
        result = subprocess.run([tool.go, "build", "-o", target, package], cwd=HARNESS, env=env,
                                capture_output=True, text=True, timeout=1800)
        assert result.returncode == 0, f"go build {package}:\n{result.stderr}"
    return built
