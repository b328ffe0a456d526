"""Text that every backend stores and returns unchanged: NUL and lone surrogates escaped reversibly.

PostgreSQL's text cannot hold U+0000, and no UTF-8 database can hold a lone surrogate (`"\\ud800"`, which
JSON allows). A black box may answer either, and a paid answer must still reach the ledger. Only strings holding
one of them (or the escape character itself) change in the database, so ordinary text reads the same in SQL.

Escape character U+E000 (private use): U+E000 -> U+E000 'e', U+0000 -> U+E000 '0', a lone surrogate U+D8xx ->
U+E000 's' + 4 hex digits. Decoding inverts it exactly.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Text
from sqlalchemy.types import TypeDecorator

ESCAPE = "\ue000"
_NEEDS_ESCAPE = re.compile("[\ue000\x00\ud800-\udfff]")
_ESCAPED = re.compile("\ue000(?:(e)|(0)|s([0-9a-f]{4}))")


def _escape_one(match: re.Match[str]) -> str:
    char = match.group()
    if char == ESCAPE:
        return ESCAPE + "e"
    if char == "\x00":
        return ESCAPE + "0"
    return f"{ESCAPE}s{ord(char):04x}"


def _unescape_one(match: re.Match[str]) -> str:
    if match.group(1):
        return ESCAPE
    if match.group(2):
        return "\x00"
    return chr(int(match.group(3), 16))


def escape_text(text: str) -> str:
    """What the database holds for `text` (unchanged unless it holds NUL, a surrogate or U+E000)."""
    return _NEEDS_ESCAPE.sub(_escape_one, text)


def unescape_text(stored: str) -> str:
    """The original of `escape_text(original)`."""
    return _ESCAPED.sub(_unescape_one, stored) if ESCAPE in stored else stored


def unencodable(text: str) -> str | None:
    """A description of the first character UTF-8 cannot encode (a lone surrogate), or None: for input checks."""
    for i, char in enumerate(text):
        if "\ud800" <= char <= "\udfff":
            return f"a lone surrogate U+{ord(char):04X} at character {i}"
    return None


class LosslessText(TypeDecorator[str]):
    """`Text` with `escape_text` on the way in and `unescape_text` on the way out."""

    impl = Text
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return escape_text(value) if isinstance(value, str) else value

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return unescape_text(value) if isinstance(value, str) else value
