"""Conflicts between the guests of one build: what two guests on one host cannot share.

Each guest states its *claims*: the host resources it takes (a forwarded host port, a vsock
CID, a MAC address on a host network, a tap interface, the files QEMU writes or opens, the
directories it writes in), the systemd unit it installs, and its name and UUID. Two guests
that claim one resource conflict; the same rule inside one spec is a cross-field rule
(CGS-NET-002, CGS-NET-003, CGS-DISK-001...), this is the same fact between specs.

A guest is on the host its spec names (`[guest] host`); guests that name none share one
host. Names (out/<name>/) and UUIDs are unique across the whole build, whatever the host.

Linear, never pairwise, and light: a fleet's guests are compiled in worker processes
that each return, per guest, the 64-bit hashes of its claims (a few integers). This
process keeps only those hashes, with the guest's index, in two arrays (12 bytes a
claim: a fleet of 10,000 guests holds about 1 MB), and at the end finds the hashes two
guests share: whether any hash occurs twice at all (a set, at C speed: the usual answer
is no), and only then with one bitmap pass. Only those guests are compiled again, here,
for their exact claims: an equal hash is then a conflict, or (once in 2^64) a
coincidence that the exact comparison drops.
"""

from __future__ import annotations

from array import array
from hashlib import blake2b
from itertools import chain
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from ..core.diagnostics import Diagnostic, SpecError
from ..core.rules import Rule

DUPLICATE_NAME = Rule("CGS-TARGET-002", "two specs in one build have the same guest name",
                      "Their artifacts would overwrite each other in out/<name>/. Names that "
                      "differ only by trailing dots are the same name to DNS and to Windows "
                      "file names (a checkout of out/).",
                      "libvirt domain names and systemd unit names are unique on a host",
                      fix="Give every guest its own [guest] name.")
DUPLICATE_UNIT = Rule(
    "CGS-TARGET-003", "two guests in one build install the same systemd unit",
    "Units are installed under one name in /etc/systemd/system/: the second unit file would "
    "replace the first, so one guest would start with the other's command line and the "
    "other never.",
    "systemd.unit(5): one unit file per unit name",
    fix="Give each guest its own [targets.systemd] unit-name (the default is <name>.service).")
PORT = Rule(
    "CGS-FLEET-001", "two guests on one host forward the same host port",
    "A port forward (QEMU user networking's hostfwd) binds the host port when QEMU starts: "
    "the second guest to start fails with \"Could not set up host forwarding rule\". "
    "0.0.0.0 binds every address, so it overlaps any other address on that port. The same "
    "forward twice in one spec is CGS-NET-003.",
    "qemu-options -netdev user,hostfwd; bind(2) EADDRINUSE",
    fix="Forward a different host port in one of the guests, or put them on different hosts "
        "([guest] host).")
VSOCK = Rule(
    "CGS-FLEET-002", "two guests on one host use the same vsock CID",
    "A vsock context ID addresses one guest on its host (vhost-vsock): the second guest to "
    "start fails (\"vhost-vsock: unable to set guest cid: Address already in use\"), and a "
    "host service that talks to a CID would talk to whichever guest holds it.",
    "vsock(7); qemu-options -device vhost-vsock-pci,guest-cid",
    fix="Give every guest on a host its own [vsock] cid.")
MAC = Rule(
    "CGS-FLEET-003", "two guests on one host use the same MAC address",
    "Two interfaces with one MAC address on a host's bridges or tap devices break ARP, DHCP "
    "leases and the bridge's forwarding table: traffic for one guest reaches the other. "
    "(User-mode interfaces are each QEMU's own network and may share one.) A MAC address "
    "set in a base spec is inherited by every guest that extends it, and the address cgsc "
    "derives from a guest's name is 24 bits of a hash: in a fleet of thousands of guests on "
    "one network, two derived addresses are likely to meet.",
    "IEEE 802 MAC addresses; CGS-NET-002 inside one spec",
    fix="Give each guest its own mac, or leave it out to have one derived from the guest's "
        "name (and set it for one of two guests whose derived addresses meet).")
TAP = Rule(
    "CGS-FLEET-004", "two guests on one host open the same tap interface",
    "QEMU attaches to an existing tap device by name (mode = \"tap\"); a second QEMU cannot "
    "attach to a tap device another one holds (\"could not configure /dev/net/tun: Device "
    "or resource busy\").", "qemu-options -netdev tap,ifname",
    fix="Give every guest on a host its own tap interface.")
FILE = Rule(
    "CGS-FLEET-005", "a host file that one guest writes is also used by another guest",
    "Two guests on one host must not share a file one of them writes: a disk image opened "
    "read-write (QEMU's image locking refuses the second guest; without locking, on NFS say, "
    "both write and the file system inside is destroyed, and each guest reads the other's "
    "data), a UEFI variable store, a console file, a QMP or console socket (the second QEMU "
    "replaces the first one's socket). Files opened read-only (firmware code, kernels, "
    "read-only disks) may be shared.",
    "qemu-options -drive (file locking); CGS-DISK-001 inside one spec",
    fix="Give each guest its own file: `{name}` in a base spec's paths becomes each guest's "
        "name (/var/lib/guests/{name}/root.qcow2), or attach a shared image read-only.")
DIRECTORY = Rule(
    "CGS-FLEET-006", "two guests on one host write in the same directory",
    "The directory that holds a guest's sockets, its stop channel and console file belongs "
    "to that guest: systemd removes a RuntimeDirectory= when its unit stops, taking the "
    "other guest's sockets with it.", "systemd.exec(5) RuntimeDirectory=; CGS-PATH-002",
    fix="Keep each guest's sockets and console file under its own /run/cgsc/<name>/ or "
        "/var/log/cgsc/<name>/.")
UUID = Rule(
    "CGS-FLEET-007", "two guests have the same UUID",
    "The UUID names the guest to libvirt, which refuses to define a second domain with a "
    "UUID another domain has, and to the guest itself (SMBIOS system UUID), where inventory "
    "and attestation tooling tells machines apart by it. A uuid set in a base spec is "
    "inherited by every guest that extends it.", "libvirt domain XML <uuid>; SMBIOS type 1",
    fix="Leave uuid out (cgsc derives a distinct one from each guest's name) or give each "
        "guest its own.")


class Where(NamedTuple):
    """A key of a spec, placed at its file and line only when a message needs it: the line
    index of a spec costs more to build than compiling it, and a fleet needs it for
    almost none of its specs."""
    spec: str
    key: tuple

    def located(self) -> Diagnostic:
        from ..spec.source import load
        try:
            return load(self.spec).locate(Diagnostic("", self.key, ""))
        except SpecError:  # the file changed under the build: its name is still right
            return Diagnostic("", self.key, "").located(self.spec, 0)

    def place(self, d: Diagnostic) -> Diagnostic:
        at = self.located()
        return d.located(at.file, at.line, at.column)


class Claim(NamedTuple):
    kind: str            # a key of RULES
    key: object          # what two guests may not both have
    where: tuple         # the spec key that makes the claim (its line, on a conflict)
    role: str            # what the resource is to the guest: "disk image", "QMP socket"
    writes: bool = True  # files: False when opened read-only (readers may share it)
    address: str = ""    # port forwards: the host address (0.0.0.0 overlaps any)

    @property
    def what(self) -> str:
        """The resource in words: "tcp host port 5432 on 127.0.0.1", "disk image /x"."""
        if self.kind == "port":
            protocol, port = self.key
            every = " (every address)" if self.address == WILDCARD else ""
            return f"{protocol} host port {port} on {self.address}{every}"
        if self.kind in ("name", "unit"):
            return self.role
        derived = self.role.endswith(" (derived)")
        return f"{self.role[:-len(' (derived)')] if derived else self.role} {self.key}" + \
            (" (derived)" if derived else "")


# kind -> the rule it breaks; names and units keep the rules they always had
RULES = {"port": PORT, "vsock": VSOCK, "mac": MAC, "tap": TAP, "file": FILE,
         "directory": DIRECTORY, "uuid": UUID, "name": None, "unit": None}
HINTS = {"port": "forward another host port, or say that the guests run on different "
                 "hosts ([guest] host)",
         "vsock": "give each guest on a host its own [vsock] cid",
         "mac": "leave mac out (cgsc derives one from the guest's name) or give each its own",
         "tap": "give each guest on a host its own tap interface",
         "file": "give each guest its own file (`{name}` in a base's paths is the guest's "
                 "name), or attach a shared image read-only",
         "directory": "keep each guest's sockets and console file in its own directory",
         "uuid": "leave uuid out (cgsc derives one from the guest's name) or give each its own"}
GLOBAL = ("name", "uuid")   # unique across the build, whatever host a guest is on
WILDCARD = "0.0.0.0"


def name_key(name: str) -> str:
    """A guest name as the consumers that fold names see it: DNS (an FQDN's final dot) and
    Windows file names (a checkout of out/) drop trailing dots, so "web." is "web"."""
    return name.rstrip(".") or name


def claims(plan, data: dict, installed, on_host: bool) -> Tuple[tuple, ...]:
    """What a compiled guest claims, as plain tuples in Claim's order (made into Claims
    only for a conflict: a fleet's build hashes them and drops them). `data`: its merged
    spec; `installed`: the files it installs under a host-wide name, GuestOutput.installed;
    `on_host`: it is built for a host, not only for KubeVirt, whose pods hold their own
    ports, files and networks."""
    guest = data["guest"]
    given = "uuid" in guest
    out = [("name", name_key(plan.name), ("guest", "name"), plan.name, True, ""),
           ("uuid", plan.uuid, ("guest", "uuid") if given else ("guest", "name"),
            "UUID" if given else "UUID (derived)", True, "")]
    out += [("unit", name, where.key, name, True, "") for name, where in installed]
    if not on_host:
        return tuple(out)
    nets = data.get("net", ())
    for i, nic in enumerate(plan.nics):
        if nic.mode != "user":   # a user-mode network is QEMU's own
            out.append(("mac", nic.mac, ("net", i, "mac"), "MAC address", True, "")
                       if "mac" in nets[i] else
                       ("mac", nic.mac, ("net", i), "MAC address (derived)", True, ""))
        if nic.mode == "tap":
            out.append(("tap", nic.ifname, ("net", i, "tap"), "tap interface", True, ""))
        for j, (protocol, address, port, _guest_port) in enumerate(nic.forwards):
            out.append(("port", (protocol, port), ("net", i, "forward", j), "", True, address))
    if plan.vsock_cid is not None:
        out.append(("vsock", plan.vsock_cid, ("vsock", "cid"), "vsock CID", True, ""))
    firmware, kernel = plan.firmware, plan.kernel
    files = [(("firmware", "code"), firmware.code, "firmware image", False),
             (("firmware", "vars"), firmware.vars, "UEFI variable store", True),
             (("kernel", "image"), kernel.image, "kernel image", False),
             (("kernel", "initrd"), kernel.initrd, "initrd", False)]
    files += [(("disk", i, "path"), d.path, "disk image", not d.readonly)
              for i, d in enumerate(plan.disks)]
    made = [(("qmp", "socket"), plan.qmp_socket, "QMP socket")]
    if plan.console.kind in ("socket", "file"):
        made.append((("console", "path"), plan.console.path, f"console {plan.console.kind}"))
    files += [(key, path, what, True) for key, path, what in made]
    seen = set()
    for key, path, what, writes in files:
        if path and path not in seen:   # one guest's own repeats are its own rules' business
            seen.add(path)
            out.append(("file", path, key, what, writes, ""))
    directories = {plan.runtime_dir: ("guest", "name")}
    for key, path, _what in made:
        if path:
            directories.setdefault(path.rsplit("/", 1)[0] or "/", key)
    out += [("directory", path, key, "directory", True, "") for path, key in directories.items()]
    return tuple(out)


def hashed(found: Sequence[tuple], host: str) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """(exclusive, shared) claim hashes of one guest: what a worker returns. A port forward
    is hashed without its address, so that 0.0.0.0 meets every address of its port (an
    equal hash is only a candidate; the exact claims decide). The hash is the same in
    every process and every run (Python's str hash is keyed per process): the incremental
    cache (output/cache.py) keeps a guest's claim hashes for later builds to compare."""
    exclusive, shared = [], []
    for kind, key, _where, _role, writes, _address in found:
        (exclusive if writes else shared).append(claim_hash(kind, "" if kind in GLOBAL
                                                            else host, key))
    return tuple(exclusive), tuple(shared)


def claim_hash(kind: str, scope: str, key) -> int:
    """A signed 64-bit hash of a claim (its kind, host scope and key: strings, integers
    and tuples of them, whose repr is the same in every run)."""
    data = repr((kind, scope, key)).encode("utf-8", "surrogateescape")
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "little", signed=True)


class Owner(NamedTuple):
    """A guest whose claims are compared again: its spec, name, host and exact claims."""
    spec: str
    name: str
    host: str
    claims: Tuple[Claim, ...]


class Registry:
    """The claims of one build's guests, as hashes; conflicts() says which clash."""

    def __init__(self) -> None:
        self._exclusive, self._exclusive_owner = array("q"), array("q")
        self._shared, self._shared_owner = array("q"), array("q")
        self._gathered: List[Tuple[object, int]] = []   # extend()

    def add(self, index: int, hashes: Tuple[Tuple[int, ...], Tuple[int, ...]]) -> None:
        exclusive, shared = hashes
        self._exclusive.extend(exclusive)
        self._exclusive_owner.extend([index] * len(exclusive))
        self._shared.extend(shared)
        self._shared_owner.extend([index] * len(shared))

    def extend(self, claims, offset: int = 0) -> None:
        """Add claims gathered elsewhere (output.cache.Claims: arrays of hashes, and
        their owners' indexes when asked for, each `offset` further on)."""
        self._gathered.append((claims, offset))

    def _candidates(self) -> Dict[int, List[int]]:
        """Hash -> the guests (indexes, in order) that claim it, for every hash that an
        exclusive claim shares with another claim of another guest."""
        if self._apart():
            return {}
        exclusive_parts = [self._exclusive] + [c.exclusive for c, _o in self._gathered]
        shared_parts = [self._shared] + [c.shared for c, _o in self._gathered]
        unique = set()   # the usual case, at C speed: no hash met twice
        for part in exclusive_parts:
            unique.update(part)
        if len(unique) == sum(map(len, exclusive_parts)) and all(
                unique.isdisjoint(part) for part in shared_parts):
            return {}
        del unique
        bits = 1 << max(16, (sum(map(len, exclusive_parts)) * 64).bit_length())   # ~1.5%
        mask, seen = bits - 1, bytearray(bits >> 3)                              # false hits
        suspects = set()
        for h in chain.from_iterable(exclusive_parts):
            at = h & mask
            if seen[at >> 3] & (1 << (at & 7)):
                suspects.add(h)
            else:
                seen[at >> 3] |= 1 << (at & 7)
        for h in chain.from_iterable(shared_parts):
            at = h & mask
            if seen[at >> 3] & (1 << (at & 7)):
                suspects.add(h)
        del seen
        gathered = [c.owners(offset) for c, offset in self._gathered]
        owners: Dict[int, List[int]] = {}
        exclusive: Dict[int, int] = {}
        for hashes, indexes, is_exclusive in (
                (exclusive_parts, [self._exclusive_owner] + [g[0] for g in gathered], True),
                (shared_parts, [self._shared_owner] + [g[1] for g in gathered], False)):
            for h, index in zip(chain.from_iterable(hashes), chain.from_iterable(indexes)):
                if h in suspects:
                    listed = owners.setdefault(h, [])
                    if index not in listed[-1:]:
                        listed.append(index)
                    if is_exclusive:
                        exclusive[h] = exclusive.get(h, 0) + 1
        return {h: sorted(set(listed)) for h, listed in owners.items()
                if h in exclusive and len(set(listed)) > 1}

    def _apart(self) -> bool:
        """Whether no hash meets another at all, known without hashing every claim again:
        the claims gathered are one part known clean (a cache section's whose hashes met
        none of each other's when it was written: output.cache.Claims.clean), and each
        of the few added here meets nothing (searched for in the part's bytes)."""
        if len(self._gathered) != 1 or not getattr(self._gathered[0][0], "clean", False):
            return False
        gathered = self._gathered[0][0]
        unique = set(self._exclusive)
        if len(unique) != len(self._exclusive) or not unique.isdisjoint(self._shared):
            return False
        exclusive, shared = gathered.exclusive.tobytes(), gathered.shared.tobytes()
        return not any(_holds(exclusive, h) or _holds(shared, h) for h in self._exclusive) and (
            not any(_holds(exclusive, h) for h in self._shared))

    def conflicts(self, owner: Callable[[int], Optional[Owner]]) -> List[Tuple[str, Diagnostic]]:
        """(spec, error) for every guest that claims what an earlier guest holds, naming
        both guests and both spec lines. `owner(index)`: that guest, compiled again."""
        candidates = self._candidates()
        if not candidates:
            return []
        cache: Dict[int, Optional[Owner]] = {}
        groups: Dict[tuple, List[Tuple[int, Claim]]] = {}
        for h, indexes in sorted(candidates.items(), key=lambda item: item[1]):
            for index in indexes:
                if index not in cache:
                    cache[index] = owner(index)
                o = cache[index]
                if o is None:   # its spec changed since: nothing to compare
                    continue
                for c in o.claims:
                    scope = "" if c.kind in GLOBAL else o.host
                    if claim_hash(c.kind, scope, c.key) == h:
                        group = groups.setdefault((c.kind, scope, c.key), [])
                        if (index, c) not in group:
                            group.append((index, c))
        out = []
        for group in groups.values():
            out += _clashes(sorted(group, key=lambda item: item[0]), cache)
        out.sort(key=lambda item: item[0])
        return [(spec, d) for _index, spec, d in out]


def _holds(data: bytes, value: int) -> bool:
    """Whether the array of 64-bit hashes whose bytes are `data` holds `value`."""
    needle = array("q", (value,)).tobytes()
    at = data.find(needle)
    while at >= 0:
        if not at % len(needle):
            return True
        at = data.find(needle, at + 1)
    return False


def _clashes(group: List[Tuple[int, Claim]], owners: Dict[int, Owner]) -> List[tuple]:
    """(index, spec, error) for each claim of one resource that an earlier claim excludes;
    one pass, remembering the first claimant of each kind (never every pair)."""
    first = first_writer = first_wildcard = None
    by_address: Dict[str, Tuple[int, Claim]] = {}
    out = []
    for index, c in group:
        if c.kind == "port":
            earlier = first if c.address == WILDCARD else (by_address.get(c.address) or first_wildcard)
        elif c.kind == "file":
            earlier = first if c.writes else first_writer
        else:
            earlier = first
        if earlier is not None and earlier[0] != index:
            o = owners[index]
            out.append((index, o.spec, _error(o, c, owners[earlier[0]], earlier[1])))
        first = first or (index, c)
        if c.writes:
            first_writer = first_writer or (index, c)
        if c.kind == "port":
            by_address.setdefault(c.address, (index, c))
            if c.address == WILDCARD:
                first_wildcard = first_wildcard or (index, c)
    return out


def _error(o: Owner, c: Claim, p: Owner, earlier: Claim) -> Diagnostic:
    """The error of guest `o`'s claim `c`, which guest `p` holds (its claim `earlier`),
    located at `o`'s spec line and naming `p`'s."""
    here = Where(o.spec, c.where)
    if c.kind == "name":
        said = (f"{c.what!r} is also built from {p.spec}" if earlier.what == c.what else
                f"{c.what!r} names the same guest as {earlier.what!r} (from {p.spec}): DNS "
                "and Windows file names drop a trailing dot")
        return here.place(DUPLICATE_NAME.error(c.where, said, "give every guest its own name"))
    on = f" on host {o.host!r}" if o.host and c.kind not in GLOBAL else ""
    if c.kind == "unit":
        return here.place(DUPLICATE_UNIT.error(
            c.where, f"{c.what!r} is also installed by guest {p.name!r} (from {p.spec}){on}",
            "give each guest its own unit-name"))
    at, mine = Where(p.spec, earlier.where).located(), here.located()
    role = earlier.what if c.kind == "port" else earlier.role
    if (at.file, at.line) == (mine.file, mine.line):   # a base line both guests inherit
        there = "from this same line"
    else:
        there = f"{at.file}:{at.line}" if at.line else at.file
    if (c.what if c.kind == "port" else c.role) != role:   # it is something else to the other
        there += f", as its {role}"
    verb = {"port": "forwarded", "file": "opened read-write" if earlier.writes and
            role in ("disk image", "UEFI variable store") else "written" if earlier.writes
            else "opened read-only"}.get(c.kind, "used")
    hint = HINTS[c.kind]
    if c.kind == "mac" and c.role.endswith("(derived)"):
        hint = ("set mac on one of them: a derived address is 24 bits of a hash of the guest's "
                "name, so in a large fleet on one network two can meet")
    return RULES[c.kind].error(c.where, f"{c.what} is also {verb} by guest {p.name!r} "
                               f"({there}){on}", hint).located(mine.file, mine.line, mine.column)


def check(found: Iterable[Tuple[int, Owner]]) -> List[Tuple[str, Diagnostic]]:
    """Conflicts among guests held in memory: (index, Owner) of each."""
    held = dict(found)
    if len(held) < 2:   # one guest: nothing to share (its own repeats are its own rules')
        return []
    registry = Registry()
    for index, o in held.items():
        registry.add(index, hashed(o.claims, o.host))
    return registry.conflicts(held.get)
