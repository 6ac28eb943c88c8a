"""`cgsc verify` on 6,000 mutated and truncated reports and quotes: exit status 0 or 1,
never 2 or 3, never a traceback, always a JSON verdict. From a fixed seed, in process."""

from __future__ import annotations

import json
import random
import struct

import attestation_guests as guests
from evidence_layouts import snp_report, tdx_quote
from helpers import run_cli

CASES = 6000


def _mutate(rng: random.Random, data: bytes, header_words) -> bytes:
    data = bytearray(data)
    op = rng.randrange(7)
    if op == 0:      # flip bits anywhere
        for _ in range(rng.randint(1, 8)):
            if data:
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif op == 1:    # truncate
        del data[rng.randrange(len(data) + 1):]
    elif op == 2:    # extend
        data += bytes(rng.randrange(256) for _ in range(rng.randint(1, 64)))
    elif op == 3:    # a framing word (version, TEE type, body type and size, signature length)
        offset, fmt = rng.choice(header_words)
        if offset + struct.calcsize(fmt) <= len(data):
            size = struct.calcsize(fmt)
            value = rng.choice([0, 1, 2, 3, 4, 5, 6, 0x81, 0xFFFF, (1 << 8 * size) - 1,
                                rng.randrange(1 << 8 * size)])
            struct.pack_into(fmt, data, offset, value)
    elif op == 4:    # overwrite a run with garbage
        if data:
            start = rng.randrange(len(data))
            data[start:start + 32] = bytes(rng.randrange(256) for _ in range(32))
    elif op == 5:    # cut out a run
        if data:
            start = rng.randrange(len(data))
            del data[start:start + rng.randint(1, 64)]
    return bytes(data)   # op 6: unchanged (must match)


def test_mutated_evidence_gives_exit_0_or_1(tmp_path):
    rng = random.Random(20261206)
    for sub in ("snp", "tdx"):
        (tmp_path / sub).mkdir()
    snp_guest, snp_manifest = guests.build("snp", str(tmp_path / "snp"))
    tdx_guest, tdx_manifest = guests.tdx(str(tmp_path / "tdx"))
    snp_pred = snp_manifest["attestation"]["report"]
    tdx_pred = tdx_manifest["attestation"]["report"]
    bases = [(snp_guest, snp_report(v, snp_pred), [(0, "<I")]) for v in (2, 3, 5)]
    bases += [(tdx_guest, tdx_quote(v, tdx_pred, body),
               [(0, "<H"), (2, "<H"), (4, "<I"), (48, "<H"), (50, "<I"),
                (48 + (6 if v == 5 else 0) + (648 if body == 3 else 584), "<I")])
              for v, body in ((4, 2), (5, 2), (5, 3))]
    path = tmp_path / "evidence.bin"
    codes = {0: 0, 1: 0}
    for i in range(CASES):
        guest, base, words = bases[i % len(bases)]
        path.write_bytes(_mutate(rng, bytes(base), words))
        code, out, err = run_cli("verify", str(path), "--guest", guest, "--format", "json")
        assert code in (0, 1), (i, code, err)
        assert "Traceback" not in err
        verdict = json.loads(out)
        assert verdict["match"] == (code == 0)
        codes[code] += 1
    assert sum(codes.values()) == CASES and codes[0] and codes[1]
