"""One escaper per syntax, each round-tripped with hostile strings through its real reader."""

from __future__ import annotations

import subprocess
from xml.etree import ElementTree

import pytest
from helpers import systemd_split

from cgsc.core.escape import (comment_line, hash_comment, shell_word, systemd_path_word,
                         systemd_value, xml_attr, xml_comment, xml_text)
from cgsc.lower.qemu import JsonOpts, Opts, keyval_split

HOSTILE = ["plain", "with space", 'double"quote', "single'quote", "dollar $HOME ${X} $$ $(id)",
           "backtick `id`", "percent %n %% %", "back\\slash \\n", "semi;colon", ";",
           "comma,comma,,", "new\nline", "tab\tchar", "ünïcödé ✓", "", "-leading-dash", "..",
           "../../etc/passwd", "glob * ? [a]", "tilde ~root", "amp & lt < gt > ", "trailing\\",
           "#hash", "a=b,c=d", "ctrl\x01\x1f"]


def test_shell_words_read_back_exactly_through_sh():
    script = "printf '%s\\0' " + " ".join(shell_word(w) for w in HOSTILE)
    out = subprocess.run(["sh", "-c", script], capture_output=True, check=True).stdout
    assert out.split(b"\0")[:-1] == [w.encode() for w in HOSTILE]


def test_qemu_keyval_values_read_back_exactly():
    opts = Opts("virtio-blk-pci", tuple((f"k{i}", w) for i, w in enumerate(HOSTILE)))
    parts = keyval_split(opts.render())
    assert parts[0] == "virtio-blk-pci"
    assert [p.split("=", 1)[1] for p in parts[1:]] == HOSTILE


def test_qemu_keyval_renders_booleans_and_hex():
    from cgsc.lower.qemu import Hex
    assert Opts(None, (("a", True), ("b", False), ("c", Hex(0x30000)), ("d", 7))).render() == \
        "a=on,b=off,c=0x30000,d=7"


def test_qemu_json_form_is_strict_json():
    import json
    from cgsc.lower.qemu import Hex
    props = (("qom-type", "tdx-guest"), ("attributes", Hex(0x10000000)),
             ("quote-generation-socket", {"type": "unix", "path": HOSTILE[2]}))
    text = JsonOpts(props).render()
    assert json.loads(text) == {"qom-type": "tdx-guest", "attributes": 268435456,
                                "quote-generation-socket": {"type": "unix", "path": HOSTILE[2]}}
    assert "0x" not in text  # QEMU's JSON parser takes decimal integers only


def test_systemd_path_words_read_back_exactly():
    words = [w for w in HOSTILE if "\n" not in w]
    line = " ".join(systemd_path_word(w) for w in words)
    assert systemd_split(line, exec_line=False) == words


def test_systemd_values_double_specifiers_and_refuse_newlines():
    assert systemd_value("100% of $HOME") == "100%% of $HOME"
    with pytest.raises(ValueError):
        systemd_value("two\nlines")


@pytest.mark.parametrize("word", [w for w in HOSTILE if not any(ord(c) < 0x20 and c not in "\t\n" for c in w)])
def test_xml_text_and_attributes_read_back_exactly(word):
    doc = ElementTree.fromstring(f"<a b='{xml_attr(word)}'>{xml_text(word)}</a>")
    assert doc.get("b") == word
    assert (doc.text or "") == word


def test_comments_cannot_be_broken_out_of():
    for word in HOSTILE:
        assert "\n" not in comment_line(word)
        body = xml_comment(word)
        assert "--" not in body and not body.endswith("-")
        ElementTree.fromstring(f"<a><!-- {xml_comment(comment_line(word))} --></a>")


@pytest.mark.parametrize("text", HOSTILE + ["x\\ ", "a\\\t\nb\\  ", "\\ \u3000", "ok \\\\ "])
def test_no_hash_comment_line_ends_in_a_backslash_or_breaks_out(text):
    """A unit-file reader may continue a line that ends in a backslash; also once the
    trailing blanks are stripped."""
    lines = hash_comment(text).split("\n")
    assert len(lines) == text.count("\n") + 1
    for line in lines:
        assert line.startswith("#") and line == line.rstrip() and not line.endswith("\\"), line


def test_systemd_exec_words_take_the_same_escapes_by_either_path():
    """systemd_exec_word replaces the usual specials with str.replace (a value with other
    control characters goes through the translation table): both give the table's text."""
    import random

    from cgsc.core.escape import _SYSTEMD_TABLE, systemd_exec_word
    rng = random.Random(13)
    alphabet = 'ab /$%"\\\n\t\r;\x00\x01\x1b\x7f\x85é'
    for _ in range(5000):
        value = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        assert systemd_exec_word(value) == '"' + value.translate(_SYSTEMD_TABLE) + '"', value


def test_the_argv_escapers_equal_their_word_escapers():
    """shell_words, shell_join and systemd_exec_line take plain words as they are: the
    same text as escaping word by word (shell_word, shlex.join, systemd_exec_word)."""
    import random
    import shlex

    from cgsc.core.escape import shell_join, shell_words, systemd_exec_line, systemd_exec_word
    rng = random.Random(17)
    alphabet = "aZ09_@%+=:,./- '\"\\$`;\n\t\x00é\u2028*?~#!"
    for _ in range(3000):
        words = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))
                 for _ in range(rng.randint(0, 5))]
        assert shell_words(words) == [shell_word(w) for w in words], words
        assert shell_join(words) == shlex.join(words), words
        assert systemd_exec_line(words) == " ".join(systemd_exec_word(w) for w in words), words
