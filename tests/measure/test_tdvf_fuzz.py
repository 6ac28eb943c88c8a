"""5,000+ crafted TDVF images: every one is either measured or refused with a TdvfError
that names the field; none raises anything else. A sample goes through `cgsc build` in
process: exit 0 with the same MRTD, or exit 1 with a located, rule-ID'd message.

Mutations of the metadata region (descriptor, section records, the GUIDed table and the
offset entry, truncations and shifts of the image), from a fixed seed, on a synthetic
64 KiB image and on Debian's OVMF.inteltdx.ms.fd. Mutated in memory; the parser and
measure/mrtd.py are called directly, the CLI only for the sample.
"""

from __future__ import annotations

import json
import random
import re
import struct

import firmware_images as fw
from firmware_data import TDX
from helpers import run_cli
from measure_helpers import tdx_spec_text, write

from cgsc.measure import mrtd, tdvf

SEED = 20
SYNTHETIC = 4_650
REAL = 400
CLI_SAMPLE = 40
INTERESTING = (0, 1, 2, 0xFF, 0x1000, 0xFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
               1 << 32, (1 << 32) - 0x1000, 1 << 52, (1 << 63), (1 << 64) - 1, (1 << 64) - 0x1000)
_HEADER, _SECTION = 16, 32
_FIELDS = ((0, 4), (4, 4), (8, 8), (16, 8), (24, 4), (28, 4))   # offset, width of each field


def _layout(image: bytes):
    """Where the mutations aim: the descriptor, its sections, the offset entry's data."""
    meta = tdvf.parse(image)
    data = dict(tdvf.table_entries(image))[tdvf.METADATA_OFFSET_GUID]
    return meta.offset, len(meta.sections), image.rindex(data)


def _value(rng, width):
    value = rng.choice(INTERESTING + (rng.getrandbits(8 * width),))
    return value & ((1 << 8 * width) - 1)


def _mutate(rng, base: bytes, layout):
    desc, count, entry = layout
    image = bytearray(base)
    kind = rng.randrange(9)
    if kind == 0:      # one field of one section record
        at, width = _FIELDS[rng.randrange(6)]
        pos = desc + _HEADER + rng.randrange(count + 1) * _SECTION + at
        if pos + width <= len(image):
            image[pos:pos + width] = _value(rng, width).to_bytes(width, "little")
    elif kind == 1:    # a descriptor field: signature, length, version, count
        at = rng.choice((0, 4, 8, 12))
        image[desc + at:desc + at + 4] = _value(rng, 4).to_bytes(4, "little")
    elif kind == 2:    # count and length together, consistent or not
        n = rng.choice((0, 1, 2, count - 1, count + 1, count + 2, 1000, 0xFFFFFFFF)) & 0xFFFFFFFF
        image[desc + 12:desc + 16] = struct.pack("<I", n)
        image[desc + 4:desc + 8] = struct.pack("<I", (16 + 32 * n) & 0xFFFFFFFF)
    elif kind == 3:    # the metadata offset entry's value
        image[entry:entry + 4] = _value(rng, 4).to_bytes(4, "little")
    elif kind == 4:    # a byte of the GUIDed table (sizes, GUIDs) or the footer
        pos = len(image) - 32 - rng.randrange(1, 160)
        image[pos] = rng.randrange(256)
    elif kind == 5:    # random bytes anywhere in the descriptor and its sections
        for _ in range(rng.randint(1, 8)):
            image[desc + rng.randrange(_HEADER + count * _SECTION)] ^= 1 << rng.randrange(8)
    elif kind == 6:    # truncated at the front or the back
        cut = rng.choice((rng.randrange(len(image)), 65536, len(image) - 65536, len(image) - 1))
        image = image[cut:] if rng.random() < 0.5 else image[:cut]
    elif kind == 7:    # shifted: a block added in front or behind
        block = bytes(rng.choice((65536, 4096, 1)))
        image = bytearray(block) + image if rng.random() < 0.5 else image + block
    else:              # two sections swapped, or one copied over another
        a, b = rng.randrange(count), rng.randrange(count)
        pa, pb = desc + _HEADER + a * _SECTION, desc + _HEADER + b * _SECTION
        rec_a, rec_b = bytes(image[pa:pa + _SECTION]), bytes(image[pb:pb + _SECTION])
        image[pb:pb + _SECTION] = rec_a
        if rng.random() < 0.5:
            image[pa:pa + _SECTION] = rec_b
    return bytes(image)


def _outcome(image: bytes, orders=mrtd.ORDERS):
    """("refused", field) or ("measured", {order: mrtd hex}); anything else propagates."""
    try:
        meta = tdvf.parse(image)
    except tdvf.TdvfError as exc:
        assert exc.field and str(exc).startswith(exc.field + ": ")
        return "refused", exc.field
    return "measured", {order: mrtd.mrtd(image, meta, order).hex() for order in orders}


def test_crafted_tdvf_images_are_measured_or_refused_never_a_crash(firmware, tmp_path):
    rng = random.Random(SEED)
    synthetic = fw.tdvf_image()
    with open(firmware[TDX], "rb") as fh:
        real = fh.read()
    # both orderings on the small image; one (12 ms a measurement) on the 4 MiB one
    bases = [(synthetic, _layout(synthetic), SYNTHETIC, mrtd.ORDERS),
             (real, _layout(real), REAL, (mrtd.SINGLE_PASS,))]
    outcomes, sample = {"refused": 0, "measured": 0}, []
    for base, layout, count, orders in bases:
        for i in range(count):
            image = _mutate(rng, base, layout)
            try:
                kind, detail = _outcome(image, orders)
            except Exception as exc:  # the test's point: name the mutant that broke it
                raise AssertionError(f"mutant {i} of a {len(base)}-byte base: {exc!r}") from exc
            outcomes[kind] += 1
            if i % (count // (CLI_SAMPLE // 2)) == 0:
                sample.append((image, kind, detail))
    assert sum(outcomes.values()) >= 5_000
    assert outcomes["refused"] > 1_000 and outcomes["measured"] > 100, outcomes
    assert {k for _i, k, _d in sample} == {"refused", "measured"}
    for n, (image, kind, detail) in enumerate(sample):
        (tmp_path / f"m{n}.fd").write_bytes(image)
        spec = write(tmp_path / f"m{n}.toml", tdx_spec_text(f"m{n}", f"m{n}.fd"))
        code, _out, err = run_cli("build", spec, "-o", str(tmp_path / "out"))
        assert "Traceback" not in err and code in (0, 1), err
        if kind == "measured":
            assert code == 0, err
            manifest = json.loads((tmp_path / "out" / f"m{n}" / "manifest.json").read_text())
            assert manifest["attestation"]["report"]["mrtd"] == detail["single-pass"]
        else:
            assert code == 1
            assert re.search(rf"m{n}\.toml:\d+: measurement\.firmware: m{n}\.fd.*"
                             rf"{re.escape(detail)}.*\[CGS-MEASURE-02[01]\]$", err, re.M), err
