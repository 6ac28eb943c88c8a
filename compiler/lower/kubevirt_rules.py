"""Checks of the spec's kubevirt keys that hold whichever target is built: an image named
for the cluster is part of what the reviewer approved, so it is judged at review time."""

from __future__ import annotations

from typing import Iterable

from ..core.diagnostics import Diagnostic
from ..core.rules import Rule
from ..spec.model import Guest

UNPINNED = Rule(
    "CGS-KUBEVIRT-012", "a container image is not pinned by digest",
    "A tag can be moved to another image after review: the cluster would then boot a kernel "
    "or disk nobody approved, and with kernel-hashes unavailable on KubeVirt nothing in the "
    "launch measurement would show it.", "OCI image references (name@sha256:digest)",
    fix="Append @sha256:<digest> (`crane digest IMAGE` or `skopeo inspect` prints it), or "
        "waive with a reason.", severity="warning")


def check(g: Guest) -> Iterable[Diagnostic]:
    images = [(("disk", i, "kubevirt", "container-disk"), d.kubevirt.get("container-disk"))
              for i, d in enumerate(g.disks) if isinstance(d.kubevirt, dict)]
    images.append((("targets", "kubevirt", "kernel-container"), g.kubevirt.kernel_container))
    for path, image in images:
        # isinstance: this also runs on specs with schema errors (to report everything at once)
        if isinstance(image, str) and "@sha256:" not in image:
            name, _, tag = image.rpartition(":")
            repo = name if name and "/" not in tag else image   # a registry port is no tag
            yield UNPINNED.warning(path, f"{image} is a tag, not a digest",
                                   f"pin it: {repo}@sha256:<digest>")
