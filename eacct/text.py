"""The one rule for text people type that others will read (nicknames, ledger names, remarks, questions).

Control characters and Unicode bidi controls are refused: a right-to-left override in a nickname or a ledger
name makes a share notice read differently from what it says (text spoofing). Lone surrogates (text that was
not valid UTF-8) are refused too, as they cannot be stored or sent.
"""

from __future__ import annotations

import unicodedata

__all__ = ["BIDI_CONTROLS", "PLAIN_TEXT_PATTERN", "has_unsafe_characters", "plain_text"]

# U+202A–202E (embeddings and overrides) and U+2066–2069 (isolates), as API.md names them.
BIDI_CONTROLS = frozenset(chr(code) for code in (*range(0x202A, 0x202F), *range(0x2066, 0x206A)))
# Cc: C0/C1 controls and DEL; Cs: lone surrogates; Zl/Zp: line and paragraph separators (hidden line breaks).
UNSAFE_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
# The same rule as an ECMA-262 pattern for the OpenAPI document (lone surrogates cannot occur in valid JSON text).
PLAIN_TEXT_PATTERN = r"^[^\u0000-\u001f\u007f-\u009f\u2028\u2029\u202a-\u202e\u2066-\u2069]*$"


def has_unsafe_characters(text: str) -> bool:
    """True when `text` holds a control character, a bidi control or a lone surrogate."""
    return any(ch in BIDI_CONTROLS or unicodedata.category(ch) in UNSAFE_CATEGORIES for ch in text)


def plain_text(text: str) -> str:
    """Pydantic validator form of the rule: returns `text` unchanged or raises ValueError."""
    if has_unsafe_characters(text):
        raise ValueError("不能包含控制字符或双向文本控制符")
    return text
