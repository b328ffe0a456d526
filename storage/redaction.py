"""Text made safe to show: secrets taken out of any message before it is printed, logged or stored
(`redact_secrets`), and terminal control characters escaped (`printable`).

Secrets reach messages in several spellings: a URL's `user:password@`, a query parameter named like a secret
(`?password=...`, `&api_key=...`), a libpq/DuckDB connection string (`password='...'`, `password=...`), a JSON or
repr of settings (`"password": "..."`). Every error the CLI prints and every URL it shows goes through
`redact_secrets`, so a new message cannot forget one of them. It lives at the bottom of the import graph (storage)
because storage, tasks, servers and flows all show URLs.
"""

from __future__ import annotations

import re

MASK = "***"

# a name that *ends* in a secret word: access_token, api_key, client_secret, PGPASSWORD; not max_total_tokens
_SECRET_NAME = (
    r"[A-Za-z0-9_.-]*(?:password|passwd|pwd|secret|token|api[_-]?key|apikey|access[_-]?key"
    r"|(?:secret|private)[_-]?key|auth)(?![A-Za-z0-9_.-])"
)

# scheme://user:password@host  ->  scheme://user:***@host (also when the URL cannot be parsed, e.g. a bad port)
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s'\"]*):(?P<secret>[^@\s'\"]*)@")
# name=value / name='value' / name="value" (query strings, libpq and DuckDB connection strings)
_ASSIGNMENT = re.compile(
    rf"(?P<head>(?<![A-Za-z0-9_]){_SECRET_NAME}\s*=\s*)(?:'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^\s&;,)'\"]+)",
    re.IGNORECASE,
)
# an HTTP bearer token, and OpenAI-style keys written out anywhere
_BEARER = re.compile(r"(?P<head>\bBearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
_API_KEY = re.compile(r"\bsk-[A-Za-z0-9_-]{16,}")
# "name": "value" (JSON, Python reprs of dicts)
_MAPPING = re.compile(
    rf"(?P<head>['\"]{_SECRET_NAME}['\"]\s*:\s*)(?:'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\")", re.IGNORECASE
)


def redact_secrets(text: str) -> str:
    """`text` with every password, token or key it spells in one of the forms above replaced by `***`.

    Examples: "postgresql://iz:s3cret@db/x" -> "postgresql://iz:***@db/x"; "host=db password='s3cret'" ->
    "host=db password=***"; "http://h/v1?api_key=abc&x=1" -> "http://h/v1?api_key=***&x=1".
    """
    text = _USERINFO.sub(lambda m: f"{m['head']}:{MASK}@", text)
    text = _ASSIGNMENT.sub(lambda m: f"{m['head']}{MASK}", text)
    text = _BEARER.sub(lambda m: f"{m['head']}{MASK}", text)
    text = _API_KEY.sub(f"sk-{MASK}", text)
    return _MAPPING.sub(lambda m: f'{m["head"]}"{MASK}"', text)


# C0 controls but tab, DEL, C1 controls, and the bidirectional overrides/isolates that reorder what a terminal shows
_UNPRINTABLE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def printable(text: str) -> str:
    """`text` safe for a terminal: control characters and bidi overrides shown as escapes (ESC -> \\x1b,
    U+202E -> \\u202e), so a run name or an answer cannot retitle the terminal, ring it or reverse a line."""
    return _UNPRINTABLE.sub(lambda m: repr(m.group())[1:-1] if m.group() != "\n" else "\\n", text)
