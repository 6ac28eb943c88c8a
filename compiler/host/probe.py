"""`cgsc probe`: a host profile of this host, or of recorded `virsh domcapabilities`.

Runs as any user: what it cannot read is recorded under "unreadable" (with why) and left
unknown (null), never guessed; a host without KVM, QEMU or libvirt gives a valid profile
that says so. Nothing here needs root, loads a module or starts a guest.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from typing import List, Optional

from ..core import inputs
from ..core.inputs import Kind

ARCHES = ("x86_64", "ppc64", "s390x")
FIRMWARE_DIRS = ("/usr/share/ovmf", "/usr/share/OVMF", "/usr/share/edk2/ovmf",
                 "/usr/share/edk2/x64", "/usr/share/edk2-ovmf", "/usr/share/qemu")
DESCRIPTOR_DIRS = ("/usr/share/qemu/firmware", "/etc/qemu/firmware")
# GUIDs in OVMF's reset-vector GUID table (little-endian in the image): what QEMU looks
# for before it can launch the guest (QEMU hw/i386/pc_sysfw_ovmf.c, target/i386/sev.c).
_GUIDS = {
    "sev": "00f771de-1a7e-4fcb-890e-68c77e2fb44e",            # SEV_INFO_BLOCK_GUID
    "sev-snp": "dc886566-984a-4798-a75e-5585a7bf67cc",        # OVMF SEV metadata (SNP)
    "kernel-hashes": "7255371f-3a3b-4b04-927b-1da6efa8d454",  # SEV_HASH_TABLE_RV_GUID
    "tdx": "e47a6535-984a-4798-865e-4685a7bf8ec2",            # TDX metadata offset GUID
}
# QEMU firmware descriptor (docs/interop/firmware.json) features -> profile features
_DESCRIPTOR_FEATURES = {"amd-sev": "sev", "amd-sev-es": "sev-es", "amd-sev-snp": "sev-snp",
                        "intel-tdx": "tdx"}


def _guid_bytes(guid: str) -> bytes:
    import uuid
    return uuid.UUID(guid).bytes_le


def _run(argv: List[str], notes: List[str]) -> Optional[str]:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                                stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        notes.append(f"`{' '.join(argv)}`: {exc}")
        return None
    if result.returncode != 0:
        notes.append(f"`{' '.join(argv)}`: exit {result.returncode}: {result.stderr.strip()[:200]}")
        return None
    return result.stdout


_SYSTEM_FILE = Kind("system file", 1 << 20, 64)   # a module parameter, a firmware descriptor


def _read(path: str, notes: List[str]) -> Optional[str]:
    try:
        return inputs.read(path, _SYSTEM_FILE).decode("utf-8", "replace").strip()
    except inputs.InputError as exc:
        if not os.path.lexists(path):
            return None
        notes.append(str(exc))
        return None


# -- QEMU's own words --------------------------------------------------------------------

def parse_version(text: str) -> Optional[str]:
    m = re.search(r"QEMU emulator version (\d+\.\d+(?:\.\d+)?)", text or "")
    return m.group(1) if m else None


def parse_objects(text: str) -> List[str]:
    """`-object help`: 'List of user creatable objects:' then one type per line."""
    lines = (text or "").splitlines()
    return sorted({l.split()[0] for l in lines[1:] if l.strip()})


def parse_cpu_models(text: str) -> List[str]:
    """`-cpu help`: 'Available CPUs:', then one indented model per line (older QEMUs
    prefix the architecture: 'x86 EPYC-v4 ...'), up to the first blank line."""
    models = set()
    for line in (text or "").splitlines()[1:]:
        if not line.strip():
            break
        words = line.split()
        name = words[1] if words[0] in ("x86", "PowerPC", "s390x") and len(words) > 1 else words[0]
        models.add(name.strip("'"))
    return sorted(models)


def parse_machines(text: str) -> dict:
    """`-machine help`: 'q35   Standard PC ... (alias of pc-q35-10.0)'."""
    out = {}
    for line in (text or "").splitlines():
        m = re.match(r"(\S+)\s.*\(alias of (\S+)\)", line)
        if m and m.group(1) not in out:
            out[m.group(1)] = m.group(2)
    return out


def _qemu(arch: str, notes: List[str]) -> Optional[dict]:
    binary = shutil.which(f"qemu-system-{arch}")
    if binary is None:
        return None
    ver = parse_version(_run([binary, "-version"], notes) or "")
    objects = _run([binary, "-object", "help"], notes)
    cpus = _run([binary, "-cpu", "help"], notes)
    machines = _run([binary, "-machine", "help"], notes)
    return {"path": binary, "version": ver,
            "objects": parse_objects(objects) if objects is not None else None,
            "cpu-models": parse_cpu_models(cpus) if cpus is not None else None,
            "machines": parse_machines(machines) if machines is not None else None}


# -- KVM, the CPU, the firmware ----------------------------------------------------------

def _flag(path: str, notes: List[str]) -> Optional[bool]:
    """A module parameter: Y/1 -> True, N/0 -> False; absent -> False (module not loaded
    or too old to have it); unreadable -> None (noted)."""
    if not os.path.exists(path):
        return False
    value = _read(path, notes)
    if value is None:
        return None
    return value in ("Y", "y", "1")


def _kvm(notes: List[str]) -> dict:
    amd = "/sys/module/kvm_amd/parameters/"
    sev_dev = os.path.exists("/dev/sev")
    sev = _flag(amd + "sev", notes)
    kvm = {
        "present": os.path.exists("/dev/kvm"),
        "sev": sev and sev_dev if sev is not None else None,
        "sev-es": (_flag(amd + "sev_es", notes) and sev_dev) if sev is not None else None,
        "sev-snp": (_flag(amd + "sev_snp", notes) and sev_dev) if sev is not None else None,
        "tdx": _flag("/sys/module/kvm_intel/parameters/tdx", notes),
        "debug-swap": _flag(amd + "debug_swap", notes),
        "s390-pv": _read("/sys/firmware/uv/prot_virt_host", notes) == "1",
        "pef": os.path.exists("/proc/device-tree/ibm,ultravisor"),
    }
    if not kvm["present"]:
        for key in ("sev", "sev-es", "sev-snp", "tdx", "s390-pv", "pef"):
            kvm[key] = False if kvm[key] is not None else None
    return kvm


CPUID = "/dev/cpu/0/cpuid"   # the cpuid driver: read at offset LEAF gives EAX..EDX (root only)
SEV_LEAF = 0x8000001F


def _cpuid(fd: int, leaf: int) -> tuple:
    return tuple(int.from_bytes(b, "little") for b in
                 (lambda d: (d[0:4], d[4:8], d[8:12], d[12:16]))(os.pread(fd, 16, leaf)))


def vendor(leaf0: tuple) -> str:
    """CPUID 0: the vendor string is EBX, EDX, ECX."""
    _eax, ebx, ecx, edx = leaf0
    return b"".join(r.to_bytes(4, "little") for r in (ebx, edx, ecx)).decode("ascii", "replace")


def _sev_geometry(notes: List[str]) -> Optional[dict]:
    """The SEV C-bit geometry, only where the CPU has SEV: an AMD CPU (CPUID 0) whose
    extended leaves reach 0x8000001F (CPUID 0x80000000 EAX) and whose 0x8000001F EAX bit 1
    says SEV; then EBX[5:0] is the C-bit position and EBX[11:6] the reduced physical bits
    (AMD APM vol. 3, CPUID Fn8000_001F). Otherwise SEV is not present: a CPU answers a leaf
    it does not have with another leaf's data (Intel: the highest basic leaf), which is
    never read as geometry. Unknown (None, noted) when the driver cannot be read."""
    try:
        fd = os.open(CPUID, os.O_RDONLY)   # a device, read by design (not an input)
    except OSError as exc:
        notes.append(f"{CPUID} (SEV cbitpos/reduced-phys-bits): {exc.strerror}; "
                     "`virsh domcapabilities` shows them (cgsc probe --from-domcapabilities)")
        return None
    absent = {"present": False, "cbitpos": None, "reduced-phys-bits": None}
    try:
        name = vendor(_cpuid(fd, 0))
        if name != "AuthenticAMD":
            notes.append(f"SEV: not present (CPU vendor {name}, not AuthenticAMD)")
            return absent
        top = _cpuid(fd, 0x80000000)[0]
        if top < SEV_LEAF:
            notes.append(f"SEV: not present (CPUID leaf 0x8000001F is past this CPU's "
                         f"highest extended leaf {top:#x})")
            return absent
        eax, ebx, _ecx, _edx = _cpuid(fd, SEV_LEAF)
    except OSError as exc:
        notes.append(f"{CPUID}: {exc.strerror}")
        return None
    finally:
        os.close(fd)
    if not eax & 0x2:
        notes.append("SEV: not present (CPUID 0x8000001F EAX bit 1 is clear)")
        return absent
    return {"present": True, "cbitpos": ebx & 0x3F, "reduced-phys-bits": (ebx >> 6) & 0x3F}


def _image(path: str, notes: List[str]):
    """(sha256, features found in its first 64 MiB) of a firmware image, or (None, None)
    when it cannot be read (noted)."""
    digest, head = hashlib.sha256(), bytearray()
    try:
        for chunk in inputs.chunks(path, inputs.BOOT_FILE):
            digest.update(chunk)
            if len(head) < 64 << 20:
                head += chunk[:(64 << 20) - len(head)]
    except inputs.InputError as exc:
        notes.append(str(exc))
        return None, None
    found = [name for name, guid in _GUIDS.items() if _guid_bytes(guid) in head]
    if "sev-snp" in found:
        found.append("sev-es")
    return digest.hexdigest(), sorted(set(found))


def _firmware(notes: List[str]) -> List[dict]:
    images = {}
    for d in DESCRIPTOR_DIRS:  # the distribution's own statement of what each image does
        for name in sorted(os.listdir(d)) if os.path.isdir(d) else ():
            path = os.path.join(d, name)
            try:
                desc = inputs.load_json(inputs.read(path, _SYSTEM_FILE), path, _SYSTEM_FILE)
                filename = desc["mapping"]["executable"]["filename"] if "executable" in \
                    desc["mapping"] else desc["mapping"]["filename"]
            except (inputs.InputError, KeyError, TypeError):
                continue
            feats = {_DESCRIPTOR_FEATURES[f] for f in desc.get("features", ()) if f in _DESCRIPTOR_FEATURES}
            images.setdefault(filename, set()).update(feats)
    for d in FIRMWARE_DIRS:
        for name in sorted(os.listdir(d)) if os.path.isdir(d) else ():
            if name.endswith(".fd") and os.path.isfile(os.path.join(d, name)):
                images.setdefault(os.path.join(d, name), set())
    out = []
    for path in sorted(images):
        if not os.path.isfile(path):
            continue
        digest, feats = _image(path, notes)
        out.append({"path": path, "sha256": digest,
                    "features": None if feats is None else sorted(set(feats) | images[path])})
    return out


def _libvirt(notes: List[str]) -> Optional[dict]:
    virsh = shutil.which("virsh")
    if virsh is None:
        return None
    text = _run([virsh, "--version"], notes)
    return {"version": text.strip()} if text and re.fullmatch(r"\d+\.\d+\.\d+", text.strip()) else None


def probe(name: Optional[str] = None) -> dict:
    notes: List[str] = []
    qemu = {arch: q for arch in ARCHES for q in [_qemu(arch, notes)] if q is not None}
    said: List[str] = []
    sev = _sev_geometry(said)
    for note in said:   # "not present" is a fact of the profile, not something unreadable
        if sev is not None and not sev["present"]:
            sev["why"] = note[len("SEV: not present "):].strip("()")
        else:
            notes.append(note)
    return {
        "profile-version": 1,
        "name": name or os.uname().nodename,
        "origin": "probe",
        "qemu": qemu,
        "libvirt": _libvirt(notes),
        "kvm": _kvm(notes),
        "sev": sev,
        "firmware": _firmware(notes),
        "unreadable": notes,
    }


# -- from what users already have --------------------------------------------------------

def from_domcapabilities(caps_path: str, version_file: Optional[str] = None,
                         objects_file: Optional[str] = None, libvirt_version: Optional[str] = None,
                         name: Optional[str] = None) -> dict:
    """A profile from `virsh domcapabilities` XML (formatdomaincaps.html), plus optional
    `qemu-system-* -version` and `-object help` output."""
    kind = inputs.CAPABILITIES
    try:
        root = inputs.load_xml(inputs.read(caps_path, kind), caps_path, kind)
    except inputs.InputError as exc:
        raise ValueError(str(exc)) from None
    if root.tag != "domainCapabilities":
        raise ValueError(f"{kind.name} {inputs.shown(caps_path)}: root element is "
                         f"<{inputs.shown(root.tag)}>, not <domainCapabilities>")
    arch = root.findtext("arch") or "x86_64"
    machine = root.findtext("machine") or ""
    alias = {"pc-q35": "q35", "pseries": "pseries", "s390-ccw-virtio": "s390-ccw-virtio"}
    machines = {a: machine for prefix, a in alias.items()
                if re.fullmatch(re.escape(prefix) + r"-\d+\.\d+.*", machine)}
    version = parse_version(_recorded(version_file)) if version_file else None
    objects = parse_objects(_recorded(objects_file)) if objects_file else None
    models = sorted({m.text for m in root.findall("./cpu/mode[@name='custom']/model") if m.text})
    loaders = [v.text for v in root.findall("./os/loader/value") if v.text]
    sev = root.find("./features/sev")
    sev_ok = sev is not None and sev.get("supported") == "yes"
    sectypes = {v.text for v in root.findall("./features/launchSecurity/enum[@name='sectype']/value")}
    launch_known = root.find("./features/launchSecurity") is not None
    kvm_domain = root.findtext("domain") == "kvm"

    def offered(sectype: str) -> Optional[bool]:
        if not kvm_domain:
            return False
        return sectype in sectypes if launch_known else None

    max_es = _number(sev, "maxESGuests", caps_path, required=False) if sev_ok else None
    s390 = root.find("./features/s390-pv")
    kvm = {
        "present": kvm_domain,
        "sev": sev_ok and kvm_domain,
        "sev-es": (sev_ok and kvm_domain and max_es > 0) if max_es is not None else
                  (False if not sev_ok else None),
        "sev-snp": offered("sev-snp") if sev_ok or launch_known else False,
        "tdx": offered("tdx"),
        "s390-pv": (s390 is not None and s390.get("supported") == "yes") if arch == "s390x" else False,
        "pef": None if arch == "ppc64" else False,
        "debug-swap": None,
    }
    geometry = None
    if sev_ok:
        geometry = {"cbitpos": _number(sev, "cbitpos", caps_path),
                    "reduced-phys-bits": _number(sev, "reducedPhysBits", caps_path)}
    return {
        "profile-version": 1,
        "name": name or os.path.basename(caps_path),
        "origin": "domcapabilities",
        # custom-mode models are libvirt's CPU map as far as this QEMU supports it: a model
        # missing there may be one QEMU knows (-cpu help), so they say nothing of QEMU alone
        "qemu": {arch: {"path": root.findtext("path"), "version": version, "objects": objects,
                        "cpu-models": None, "machines": machines or None}},
        "libvirt": {"version": libvirt_version, "cpu-models": models or None}
                   if libvirt_version or models else None,
        "kvm": kvm,
        "sev": geometry,
        # loader values are the firmware libvirt knows; what each supports is not in the XML
        "firmware": [{"path": p, "sha256": None, "features": None} for p in loaders] or None,
        "unreadable": [],
    }


def _recorded(path: str) -> str:
    """A file of recorded command output (`qemu-system-* -version`), by the input
    boundary's rules."""
    try:
        return inputs.read_text(path, inputs.TOOL_OUTPUT)
    except inputs.InputError as exc:
        raise ValueError(str(exc)) from None


_DECIMAL = re.compile(r"[0-9]{1,9}")   # what libvirt prints (%u); no sign, space or _


def _number(sev, name: str, caps_path: str, required: bool = True) -> Optional[int]:
    """The number in <sev><name>: libvirt writes <cbitpos> and <reducedPhysBits> whenever
    SEV is supported, and <maxESGuests> when the host says; anything else is not its
    output, so no guess is made from it."""
    text = sev.findtext(name)
    where = f"{inputs.CAPABILITIES.name} {inputs.shown(caps_path)}: <sev supported='yes'>"
    if text is None:
        if not required:
            return None
        raise ValueError(f"{where} has no <{name}> (libvirt writes one whenever SEV is "
                         "supported): give the output of `virsh domcapabilities` unchanged")
    if not _DECIMAL.fullmatch(text.strip()):
        raise ValueError(f"{where}: <{name}> is \"{inputs.shown(text[:40])}\", not a decimal number")
    return int(text.strip())


def write(path: str, text: str) -> None:
    """Write the profile atomically (a temporary file beside it, then rename)."""
    import tempfile

    from ..spec.paths import directory_of
    # beside the file, where the kernel resolves it (link/../x.json: beside where link leads)
    fd, tmp = tempfile.mkstemp(dir=directory_of(path), prefix=".probe-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
