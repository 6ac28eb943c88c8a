"""The measure stage: read the boot files a spec's [measurement] names, let the mechanism
check and measure them, and return the reference values for the manifest and the digests
the launch artifacts check.

It runs after normalize and check, only when the spec has [measurement]; nothing else in
a build reads files. The measuring library is imported by the mechanism's measure module,
so a plain build never loads it.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from ..core import inputs
from ..core.diagnostics import Diagnostic, KeyPath
from ..core.rules import Rule
from ..lower.plan import HostParam, LaunchBinding, MeasuredFile
from ..lower.qemu import global_option, json_object, opts_parse
from ..spec.model import Guest

SCHEMA_VERSION = 1
SCHEMA_ID = "https://cgsc.invalid/schema/v1/attestation.schema.json"
MAX_FILE = inputs.BOOT_FILE.limit   # larger boot files are a mistake (a disk image as initrd)

UNREADABLE = Rule(
    "CGS-MEASURE-001", "a file to measure cannot be read",
    "The expected launch measurement is computed from the bytes of the boot files; a file "
    "that is missing, unreadable, not a regular file, larger than 1 GiB or longer or shorter "
    "than its size (a /proc or /sys file, a file being written) cannot be measured.",
    "docs/attestation.md ([measurement], step by step)",
    fix="Point the key at a readable build-time copy of the file (a relative path is relative "
        "to the spec file).")
NOT_APPLICABLE = Rule(
    "CGS-MEASURE-002", "a [measurement] key does not apply to this mechanism",
    "Only AMD SEV-ES and SEV-SNP measure vCPU state (vcpu-type, guest-features), only "
    "SEV-SNP has ID blocks (id-key, author-key, family-id, image-id, guest-svn), only Intel "
    "TDX has a page order (tdx-page-order), and POWER PEF has no launch measurement that can "
    "be predicted. A key that has no effect would suggest a check that never happens.",
    "docs/attestation.md (predicted and not predicted)",
    fix="Remove the key (or the [measurement] table for PEF).")
NO_COUNTERPART = Rule(
    "CGS-MEASURE-003", "a measured file has nothing to measure or is not launched",
    "A build-time copy is only meaningful for a file the guest boots: measurement.kernel "
    "needs [kernel] image, measurement.initrd needs [kernel] initrd, and the measurement "
    "needs at least one boot file.",
    "docs/attestation.md ([measurement], step by step)",
    fix="Add the boot file to [firmware]/[kernel], or remove the measurement key.")
LIBRARY = Rule(
    "CGS-MEASURE-004", "the measuring library is not installed",
    "AMD launch digests are computed by sev-snp-measure (Python >= 3.10), which cgsc "
    "installs as a dependency on Python 3.10 and newer.",
    "virtee/sev-snp-measure; docs/attestation.md (AMD: from which inputs)",
    fix="Run cgsc on Python >= 3.10 with its dependencies installed (pip install cgsc).")
OVERRIDDEN = Rule(
    "CGS-MEASURE-005", "extra-args override what the measurement was computed from",
    "The launch digest covers the vCPU count and model, the firmware, the kernel, initrd "
    "and command line, and the confidential object; extra-args that set them again, or that "
    "can set any option (-readconfig, -set) or replace the launched state (-incoming, "
    "-loadvm), make QEMU launch something else than what was measured, and the guest fails "
    "attestation. A -global reaches every device whose type is its driver or a subtype of "
    "it: `cpu.stepping=2`, `x86_64-cpu.family=25` or `driver=device,...` change the vCPUs "
    "as much as `EPYC-v4-x86_64-cpu.stepping=2` does; one for an unrelated device "
    "(`kvm-pit.lost_tick_policy=discard`) passes.",
    "docs/attestation.md (AMD: extra QEMU arguments); QEMU system/qdev-monitor.c "
    "qemu_global_option, qom/object.c object_apply_global_props",
    fix="Set the value in the spec ([guest] vcpus/cpu, [firmware], [kernel]) instead of extra-args.")
# QEMU options that set a measured input, or can set any option at all (-readconfig reads
# a config file, -set changes any option group), or replace the launched guest state
# (-incoming, -loadvm), the firmware search path (-L) or the accelerator: always refused.
MEASURED_OPTIONS = ("smp", "cpu", "bios", "kernel", "initrd", "append", "pflash", "drive",
                    "dtb", "readconfig", "set", "L", "accel", "incoming", "loadvm", "preconfig")
MEASURED_OBJECTS = ("sev-guest", "sev-snp-guest", "tdx-guest", "s390-pv-guest", "igvm-cfg")
# -machine / -M: the machine type (a bare first word) and the properties that name a
# measured input; other properties (dump-guest-core=off, hpet=off...) pass.
MEASURED_MACHINE_PROPS = ("type", "accel", "confidential-guest-support", "memory-encryption",
                          "memory-backend", "igvm-cfg", "pflash0", "pflash1", "firmware",
                          "kernel", "initrd", "append", "dtb", "smp")
# -device / -global drivers that load bytes into guest memory or are a flash chip (QEMU
# TYPE_GENERIC_LOADER, TYPE_PFLASH_CFI01/02); vCPUs are TYPE_CPU "cpu" and its subtypes,
# all named "*-cpu" (TYPE_X86_CPU "x86_64-cpu", "EPYC-v4-x86_64-cpu", "host-x86_64-cpu"...).
MEASURED_DEVICES = ("loader", "cfi.pflash01", "cfi.pflash02")
# A -global applies to every device that is its driver, a subtype or an implementer of it
# (qom/object.c object_apply_global_props: object_dynamic_cast), so the types above the
# measured ones reach them too: TYPE_OBJECT, TYPE_DEVICE and its interfaces (hw/core/qdev.c
# device_type_info), TYPE_SYS_BUS_DEVICE (the pflash chips' parent).
MEASURED_ANCESTORS = ("object", "device", "vmstate-if", "resettable", "sys-bus-device")
# The confidential objects and their parents; -global never reaches a non-device (qdev
# applies globals in device_post_init), but one that names them means to change them.
CONFIDENTIAL_TYPES = MEASURED_OBJECTS + ("sev-common", "x86-confidential-guest",
                                         "confidential-guest-support", "pef-guest")

# [measurement] key -> (spec key path that the file is launched from, plan role)
FILE_KEYS = (("firmware", ("firmware", "code")), ("kernel", ("kernel", "image")),
             ("initrd", ("kernel", "initrd")))
KEY_FILES = ("id-key", "author-key")


class BootFile(NamedTuple):
    """One boot file as read at build time, once per invocation (core/filecache.py): the
    sha256 recorded, the digest and the firmware checks all come from the one read."""
    role: str                 # "firmware", "kernel", "initrd", "id-key", "author-key"
    key: KeyPath              # the key that named the file read (for diagnostics)
    given: str                # the path as the spec wrote it
    path: str                 # where it was read (the given path, resolved)
    launched: str             # the path the launch copies the file from
    sha256: str
    size: int
    entry: Any = None         # its filecache.Entry
    cache: Any = None         # the filecache.FileCache that read it

    @property
    def state(self):
        """The sha256 object after the file's last byte (copy it to continue it)."""
        return self.entry.state

    def content(self):
        """The file's bytes (read-only by convention): the ones that were hashed. Raises
        Unmeasurable when they must be read again and the file has changed."""
        return self._located(self.cache.content, self.entry, self.path)

    def derived(self, name, compute):
        """compute(the file's bytes), once per invocation and file for `name`."""
        return self._located(self.cache.derived, self.entry, self.path, name, compute)

    def memo(self, name, compute):
        """compute(), once per invocation and file for `name`: for values that depend on
        what is derived from the file and on the parameters `name` holds."""
        return self.cache.memo(self.entry, name, compute)

    def _located(self, call, *args):
        from ..core.filecache import Unreadable
        try:
            return call(*args)
        except Unreadable as exc:
            raise Unmeasurable(unreadable(self.key, self.given, exc)) from None


class Unmeasurable(Exception):
    """A boot file could not be read again (changed since its first read this invocation)."""

    def __init__(self, diagnostic: Diagnostic):
        super().__init__(diagnostic.message)
        self.diagnostic = diagnostic


class Attested(NamedTuple):
    """What a mechanism's measure step returns."""
    digest: Optional[str] = None          # lowercase hex launch digest, when computed
    algorithm: Optional[str] = None       # "sha256", "sha384"
    inputs: dict = {}                     # everything besides the files that went in
    report: dict = {}                     # report field -> expected value, for a verifier
    not_predicted: Tuple[str, ...] = ()   # report fields nobody can predict from the spec
    unmeasured: Tuple[str, ...] = ()      # boot inputs launched but not measured
    notes: Tuple[str, ...] = ()
    config: dict = {}                     # additions to the mechanism table (id-block...)
    params: Tuple[HostParam, ...] = ()    # host settings the measurement assumes


class Measured(NamedTuple):
    attestation: dict
    binding: Optional[LaunchBinding]
    config: dict
    references: Tuple[Tuple[str, str], ...] = ()   # (file name, text): verifier formats
    inputs: Tuple[Tuple[str, str], ...] = ()       # (path read, sha256) of every file read


def static_checks(guest: Guest) -> List[Diagnostic]:
    """Checks that need no file: keys that do not apply, files with no counterpart."""
    table, mech = guest.measurement, guest.mechanism
    if not mech.measurement_keys:
        return [NOT_APPLICABLE.error(("measurement",), f"{mech.title} has no launch measurement "
                                     "cgsc can predict", "remove [measurement]")]
    out = []
    for key in table:
        if key not in mech.measurement_keys:
            out.append(NOT_APPLICABLE.error(("measurement", key),
                                            f"does not apply to {mech.title}",
                                            f"remove it; {mech.title} takes "
                                            + ", ".join(mech.measurement_keys)))
    launched = {"firmware": guest.firmware_code, "kernel": guest.kernel_image,
                "initrd": guest.kernel_initrd}
    for key, spec_key in FILE_KEYS:
        if key in table and launched[key] is None:
            out.append(NO_COUNTERPART.error(
                ("measurement", key), f"is given but [{spec_key[0]}] {spec_key[1]} is not: "
                "nothing launches this file", f"add [{spec_key[0]}] {spec_key[1]}, or remove it"))
    if not any(launched[k] for k, _ in FILE_KEYS if k in mech.measurement_keys):
        out.append(NO_COUNTERPART.error(("measurement",), "there is no boot file to measure",
                                        "boot from [firmware] code or [kernel] image"))
    for i, what in _overriding_args(guest.extra_args):
        out.append(OVERRIDDEN.error(("qemu", "extra-args", i), what,
                                    "say it in the spec so that the measurement covers it, "
                                    "or drop it"))
    out += list(mech.measurement_checks(guest))
    return out


def _overriding_args(args) -> List[Tuple[int, str]]:
    """(index, what) for every extra argument that can change a measured input."""
    out = []
    for i, arg in enumerate(args):
        option = arg.lstrip("-") if arg.startswith("-") else None
        value = args[i + 1] if i + 1 < len(args) else ""
        if out and out[-1][0] == i - 1 and args[i - 1].startswith("-"):
            continue   # the value of an option already reported
        if option in MEASURED_OPTIONS or any(o in arg for o in MEASURED_OBJECTS):
            out.append((i, f"{arg!r} overrides what [measurement] measured"))
        elif option == "object" and any(o in value for o in MEASURED_OBJECTS):
            out.append((i, f"{arg!r} {value!r} overrides what [measurement] measured"))
        elif option in ("machine", "M") and _machine_overrides(value):
            out.append((i, f"{arg!r} {value!r} overrides what [measurement] measured"))
        elif option == "device":
            driver = _device_driver(value)
            if driver is None:
                out.append((i, f"{arg!r} {value!r} is no -device QEMU reads, so what it adds "
                               "is unknown; it may override what [measurement] measured"))
            elif _reached(driver):
                out.append((i, f"{arg!r} {value!r} adds {_reached(driver)} and overrides what "
                               "[measurement] measured"))
        elif option == "global":
            parsed = global_option(value)
            if parsed is None:
                out.append((i, f"{arg!r} {value!r} is no -global QEMU reads (DRIVER.PROPERTY="
                               "VALUE or driver=...,property=...,value=...), so what it "
                               "reaches is unknown; it may override what [measurement] "
                               "measured"))
            elif _reached(parsed[0]):
                out.append((i, f"{arg!r} {value!r} sets {parsed[1]!r} on "
                               f"{_reached(parsed[0])} and overrides what [measurement] "
                               "measured"))
    return out


def _machine_overrides(value: str) -> bool:
    props = value.split(",")
    keys = [p.partition("=")[0].split(".")[0] for p in props if "=" in p]
    return "=" not in props[0] or any(k in MEASURED_MACHINE_PROPS for k in keys)


def _device_driver(value: str) -> Optional[str]:
    """The driver of a -device argument: JSON (`{...}`) or QemuOpts with driver implied;
    None for JSON QEMU would not read."""
    if value.lstrip().startswith("{"):
        obj = json_object(value)
        return None if obj is None else str(obj.get("driver", ""))
    return dict(opts_parse(value, implied="driver")).get("driver", "")


def _reached(driver: str) -> str:
    """What a -device or -global driver reaches that the launch measurement covers, or ""."""
    if driver == "cpu" or driver.endswith("-cpu"):
        return f"{driver} (the vCPUs, whose model and count are measured)"
    if driver in MEASURED_DEVICES:
        return f"{driver} (bytes loaded into guest memory: the measured firmware)"
    if driver in CONFIDENTIAL_TYPES:
        return f"{driver} (the confidential object, whose settings are measured)"
    if driver in MEASURED_ANCESTORS:
        return f"{driver} (every device of that type: the vCPUs and the firmware flash too)"
    return ""


# Roles whose bytes the mechanism parses (firmware tables, keys): read into memory once.
# The others are only hashed, as they stream past.
KEPT = ("firmware",) + KEY_FILES


def _read(role: str, key: KeyPath, given: str, path: str, launched: str, cache=None,
          stop=None):
    """The file at `path`, read once per invocation (filecache: opened without blocking,
    checked on the open descriptor to be a regular file of at most 1 GiB, and read never
    more than one chunk past its size, hashed as it is read): (BootFile, None) or (None,
    a CGS-MEASURE-001 diagnostic). `stop`: filecache.read_into's."""
    from ..core.filecache import Unreadable, current
    cache = cache if cache is not None else current()
    try:
        entry = cache.read(path, MAX_FILE, keep=role in KEPT, stop=stop)
    except Unreadable as exc:
        return None, unreadable(key, given, exc, path)
    return BootFile(role, key, given, path, launched, entry.sha256, entry.size, entry,
                    cache), None


def unreadable(key: KeyPath, given: str, exc, path: str = "") -> Diagnostic:
    """CGS-MEASURE-001 for a filecache.Unreadable (`path`: where it was looked for)."""
    if exc.kind == "type":
        return UNREADABLE.error(key, f"{given} is not a regular file",
                                "give the file itself (a device or directory cannot be "
                                "measured)")
    if exc.kind == "size":
        return UNREADABLE.error(key, f"{given} is {exc.size} bytes; boot files are at most "
                                "1 GiB", "check the path")
    if exc.kind == "length":
        return UNREADABLE.error(key, f"{given} is {exc.size} bytes by its size but "
                                f"{'more' if exc.got > exc.size else exc.got} bytes were "
                                "read: its content is not a fixed file (/proc, /sys, or a "
                                "file being written)", "give a build-time copy of the file")
    if exc.kind == "changed":
        return UNREADABLE.error(key, f"{given} changed while cgsc was measuring it",
                                "give a build-time copy of the file that nothing writes to")
    if exc.kind == "open":
        where = f" (cgsc looked for {path})" if path and path != given else ""
        return UNREADABLE.error(key, f"{given}: {exc.reason}{where}",
                                "give a readable file (a relative path is relative to the "
                                "spec file that gives it, a base's for a key the base gives)")
    return UNREADABLE.error(key, f"{given}: {exc.reason}", "give a readable file")


def read_boot_files(guest: Guest, base_dir: Callable[[KeyPath], str], cache=None,
                    meanwhile: Optional[Callable[[Dict[str, BootFile]], None]] = None):
    """role -> BootFile for every boot file the mechanism measures; and diagnostics.
    `cache`: the invocation's filecache.FileCache (default: its current one).
    When files of both kinds are new to this invocation, the ones whose bytes are kept
    (the firmware, keys) are read first, and `meanwhile(those read)` runs while a thread
    hashes the others (a kernel and an initrd: tens of MiB, hashed without the GIL); what
    this side raises (a signal) gives the hashing up at once: the thread never outlives
    this call."""
    from ..core.filecache import current, in_thread, names_a_descriptor
    table, mech = guest.measurement, guest.mechanism
    cache = cache if cache is not None else current()
    launched = {"firmware": guest.firmware_code, "kernel": guest.kernel_image,
                "initrd": guest.kernel_initrd}
    wanted = []   # (role, key, given, path, launched), in the order diagnostics are given
    for role, spec_key in FILE_KEYS:
        if role not in mech.measurement_keys or not launched[role]:
            continue
        if role in table:
            key, given = ("measurement", role), table[role]
            path = given if os.path.isabs(given) else os.path.join(base_dir(key), given)
        else:
            key, given = spec_key, launched[role]
            path = given
        wanted.append((role, key, given, path, launched[role]))
    for role in KEY_FILES:   # signing keys: read, never listed or checked at launch
        if role in table and role in mech.measurement_keys:
            key, given = ("measurement", role), table[role]
            path = given if os.path.isabs(given) else os.path.join(base_dir(key), given)
            wanted.append((role, key, given, path, ""))
    streamed = [w for w in wanted if w[0] not in KEPT]
    ahead = None
    if (meanwhile is not None and any(cache.unseen(w[3]) for w in streamed)
            and any(cache.unseen(w[3]) for w in wanted if w[0] in KEPT)
            and not any(names_a_descriptor(w[3]) for w in wanted)):
        # new files on both sides: the kept ones' parse and measurement overlap the hashing
        # (not for a path through /proc/PID/fd: what it opens depends on what is open)
        ahead = in_thread(lambda stop: [_read(*w, cache, stop) for w in streamed])
    if ahead is None:
        found = {w[0]: _read(*w, cache) for w in wanted}
    else:
        try:
            found = {w[0]: _read(*w, cache) for w in wanted if w[0] in KEPT}
            meanwhile({role: f for role, (f, _problem) in found.items() if f is not None})
            found.update((w[0], got) for w, got in zip(streamed, ahead.result()))
        except BaseException:   # a signal, the machine's problem: the hashing is given up
            ahead.cancel()
            raise
    files: Dict[str, BootFile] = {}
    errors: List[Diagnostic] = []
    for role, *_rest in wanted:
        boot_file, problem = found[role]
        if problem:
            errors.append(problem)
        else:
            files[role] = boot_file
    return files, errors


def measure(guest: Guest, base_dir: Callable[[KeyPath], str], host: Optional[dict] = None):
    """(Measured or None, diagnostics). Never raises for bad input. The file-free rules
    (static_checks) have run and passed before this. `host`: the --host profile, if any."""
    def prepare(kept) -> None:
        try:
            guest.mechanism.prepare(guest, kept, host)
        except Unmeasurable:
            pass   # attest() meets it again and reports it

    files, errors = read_boot_files(guest, base_dir, meanwhile=prepare)
    if errors:
        return None, errors
    try:
        attested, errors = guest.mechanism.attest(guest, files, host)
    except Unmeasurable as exc:
        return None, [exc.diagnostic]
    if errors:
        return None, errors
    verify = guest.measurement.get("verify-at-launch", True)
    boot = [f for f in files.values() if f.role not in KEY_FILES]
    doc = {
        "schema": SCHEMA_ID,
        "schema-version": SCHEMA_VERSION,
        "mechanism": guest.mechanism.name,
        "launch-digest": attested.digest,
        "digest-algorithm": attested.algorithm,
        "files": [{"role": f.role, "path": f.launched, "measured-copy": f.given,
                   "sha256": f.sha256, "size": f.size} for f in boot],
        "inputs": attested.inputs,
        "report": attested.report,
        **({"unmeasured": list(attested.unmeasured)} if attested.unmeasured else {}),
        "not-predicted": list(attested.not_predicted),
        "verify-at-launch": verify,
        "notes": list(attested.notes),
    }
    from .reference_values import render
    references = render(guest, doc)
    if references.errors:
        return None, list(references.errors)
    doc["reference-values"] = list(references.record)
    binding = None
    if verify:   # QEMU inherits each checked copy on its own descriptor, from 3 up
        binding = LaunchBinding(tuple(MeasuredFile(f.role, f.launched, f.sha256, f.size, 3 + i)
                                      for i, f in enumerate(boot)), attested.params)
    inputs = tuple((f.path, f.sha256) for f in files.values())
    return Measured(doc, binding, attested.config, references.files, inputs), []
