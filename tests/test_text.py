"""eacct/text.py: the one rule for text others will read (issue 7 item 9)."""

from __future__ import annotations

import re

from eacct.text import PLAIN_TEXT_PATTERN, has_unsafe_characters


def test_bidi_controls_and_control_characters_are_unsafe():
    for ch in [*map(chr, range(0x202A, 0x202F)), *map(chr, range(0x2066, 0x206A)), "\x00", "\x1f", "\x7f", "\x85",
               "\u2028", "\u2029", "\ud800"]:
        assert has_unsafe_characters("账套" + ch), repr(ch)
    for text in ["小王", "Ledger 2018（副本）", "a-b_c.d", "مرحبا", "שלום", "👨‍👩‍👧", "e会计 6.0"]:
        assert not has_unsafe_characters(text), text


def test_documented_pattern_states_the_same_rule():
    """The OpenAPI pattern and the validator never disagree (surrogates aside: JSON text cannot carry them)."""
    pattern = re.compile(PLAIN_TEXT_PATTERN)  # fullmatch below: unlike ECMA-262, Python's "$" also matches before a final newline
    for code in [*range(0, 0xD800), *range(0xE000, 0x10000)]:
        ch = chr(code)
        assert bool(pattern.fullmatch(ch)) == (not has_unsafe_characters(ch)), hex(code)
