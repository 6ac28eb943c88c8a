"""Attacks on the incremental cache's format 4 (sections of columns, conflicts.Registry's
fast path for a clean section): each test here failed on 87886ef."""

from __future__ import annotations

import json
import os

import pytest
from cgsc.output import cache, cache_file
from helpers import run_cli
from writes_helpers import make_fleet


@pytest.fixture
def no_margin(monkeypatch):
    monkeypatch.setattr(cache, "MARGIN_NS", 0)


def _cli(*argv):
    return run_cli(*argv, "-j", "1")


def _fleet(tmp_path, count=3):
    specs = make_fleet(tmp_path / "specs", count)
    out = str(tmp_path / "out")
    code, _o, err = _cli("build", *specs, "-o", out)
    assert code == 0, err
    return specs, out


def _sections(out):
    """(header, inputs line, [[suffix, columns, numbers], ...]) of the cache file."""
    with open(os.path.join(out, ".cgsc", "cache.json"), "rb") as fh:
        raw = fh.read()
    end = raw.index(b"\n")
    header, body = json.loads(raw[:end]), raw[end + 1:]
    first = body.find(b"\n")
    inputs = body[:len(body) if first < 0 else first]
    sections = []
    for offset, length, _mac in header["sections"]:
        line = body[offset:offset + length]
        tab = line.index(b"\t")
        second = line.index(b"\t", tab + 1)
        sections.append([line[:tab], json.loads(line[tab + 1:second]), line[second + 1:]])
    return header, inputs, sections


def _rewritten(out, header, inputs, sections):
    """The cache file written again as cgsc writes it, with this user's key (a cache cgsc
    itself could have written: every MAC holds)."""
    secret = cache_file.secret(out, create=False)
    lines, table, offset = [inputs], [], len(inputs) + 1
    for suffix, columns, numbers in sections:
        line = suffix + b"\t" + json.dumps(columns, separators=(",", ":")).encode() + b"\t" + numbers
        table.append([offset, len(line), cache_file.mac(secret, line)])
        offset += len(line) + 1
        lines.append(line)
    body = b"\n".join(lines)
    fields = {k: header[k] for k in ("format", "version", "fingerprint", "code")}
    fields.update(length=len(body), sections=table)
    fields["mac"] = cache_file.mac(secret, cache_file.signed(fields), inputs)
    with open(os.path.join(out, ".cgsc", "cache.json"), "wb") as fh:
        fh.write(json.dumps(fields, separators=(",", ":")).encode() + b"\n" + body)


# -- the same spec named twice --------------------------------------------------------------

@pytest.mark.parametrize("command", ["check", "build"])
def test_a_spec_named_twice_conflicts_with_itself_with_the_cache_too(tmp_path, no_margin,
                                                                     command):
    """A spec named twice is two guests of one name, disk and sockets: without the cache
    every run says so (CGS-TARGET-002...). With it, both are hits of one record of a
    'clean' section, and Registry._apart() searched only the compiled guests' hashes
    (none) in the cached ones: a conflict that no longer was, and the run passed."""
    specs, out = _fleet(tmp_path, 2)
    twice = [specs[0], specs[1], specs[0]]
    expected = _cli(command, *twice, "-o", out, "--no-cache")
    assert expected[0] == 1 and "CGS-TARGET-002" in expected[2]
    assert _cli("check", *specs, "-o", out)[0] == 0   # both recorded
    for run in range(2):
        got = _cli(command, *twice, "-o", out)
        assert got == expected, (run, got)


# -- a section whose columns cgsc would not write -------------------------------------------

@pytest.mark.parametrize("spec", [None, 0, 1, 1.5, True])
def test_a_spec_column_entry_that_is_no_string_is_no_crash(tmp_path, no_margin, spec):
    """A section's spec column is read as it is (a record of another type is a miss,
    never a crash, says cache_section.py): an entry that is no string (a JSON object's keys,
    format 3's records, always were one) made save() raise TypeError (os.path.isabs):
    exit 3, an internal error, on every run until the cache was removed by hand."""
    specs, out = _fleet(tmp_path)
    assert _cli("check", *specs, "-o", out)[0] == 0   # every guest recorded
    header, inputs, sections = _sections(out)
    (section,) = sections
    section[1]["spec"][0] = spec
    _rewritten(out, header, inputs, sections)
    for _run in range(2):
        code, _o, err = _cli("check", *specs, "-o", out)
        assert code == 0 and "3 guest(s) up to date" in err, err


@pytest.mark.parametrize("name", ["\ud800", "node-\udbff"])
def test_a_name_column_entry_that_is_no_file_name_is_a_miss_not_a_crash(tmp_path, no_margin,
                                                                        name):
    """A record's guest name goes into the stat entries of its block as text encoded with
    surrogateescape; a lone surrogate that is no escaped byte (U+D800..U+DBFF) cannot be
    encoded, and the UnicodeEncodeError ended the run with an internal error (format 3
    caught UnicodeError for its record alone: a miss)."""
    specs, out = _fleet(tmp_path)
    assert _cli("check", *specs, "-o", out)[0] == 0   # every guest recorded
    header, inputs, sections = _sections(out)
    (section,) = sections
    section[1]["name"] = [name, "node-0001", "node-0002"]
    _rewritten(out, header, inputs, sections)
    for _run in range(2):
        code, _o, err = _cli("check", *specs, "-o", out)
        assert code == 0 and "3 guest(s) up to date" in err, err
