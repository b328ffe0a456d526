"""What a black-box call costs: a small price table for common hosted models, overridable, and local endpoints free.

Prices are USD per million tokens, input and output separately, as the providers publish them. The table is a
convenience for planning, not a bill: set `black_box.price_in_per_mtok` / `price_out_per_mtok` (CLI `--price-in`,
`--price-out`) to your own contract's prices, which always win. A model behind a local endpoint (the embedded
black box, 127.0.0.1, localhost) costs nothing unless prices are given. A hosted model that is neither in the
table nor priced is refused before anything is spent: an unknown price cannot be bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlparse

from instructzero.storage.redaction import redact_secrets
from instructzero.tasks.errors import ConfigError

PRICE_TABLE: dict[str, tuple[float, float]] = {
    # model: (USD per 1M input tokens, USD per 1M output tokens), OpenAI list prices (standard tier, 2025)
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    "gpt-3.5-turbo": (0.50, 1.50),
    "gpt-3.5-turbo-instruct": (1.50, 2.00),
    "davinci-002": (2.00, 2.00),
    "babbage-002": (0.40, 0.40),
}
"""Shipped prices; a dated snapshot ("gpt-4o-mini-2024-07-18") takes the entry of its longest matching prefix."""

LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "0.0.0.0"})


@dataclass(frozen=True)
class Prices:
    """Resolved prices of one black box, USD per million tokens, and where they came from."""

    in_per_mtok: float
    out_per_mtok: float
    source: str  # "config", "table:<entry>", "local"

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """USD for one call's (or a sum of calls') usage."""
        return (prompt_tokens * self.in_per_mtok + completion_tokens * self.out_per_mtok) / 1_000_000

    @property
    def free(self) -> bool:
        return self.in_per_mtok == 0 and self.out_per_mtok == 0


def is_local(base_url: str | None) -> bool:
    """True for the embedded black box (no URL) and endpoints on this machine."""
    if not base_url:
        return True
    host = (urlparse(base_url).hostname or "").lower()
    return host in LOCAL_HOSTS


def table_entry(model: str) -> str | None:
    """The price-table entry for `model`: exact name, else the longest entry it starts with ("gpt-4o-2024-08-06")."""
    name = model.strip().lower().removeprefix("openai/")
    if name in PRICE_TABLE:
        return name
    matches = [key for key in PRICE_TABLE if name.startswith(key + "-")]
    return max(matches, key=len) if matches else None


def resolve_prices(model: str, base_url: str | None, price_in: float | None, price_out: float | None) -> Prices:
    """The prices a run is charged at.

    Given prices win (one given, the other taken from the table, or 0 on a local endpoint); otherwise the table's;
    otherwise a local endpoint is free.

    Raises:
        ConfigError: a negative price, or a hosted model with no price given and no table entry.
    """
    for what, value in (("price_in_per_mtok", price_in), ("price_out_per_mtok", price_out)):
        if value is not None and not value >= 0:
            raise ConfigError(f"black_box.{what} must be >= 0 USD per million tokens, got {value!r}")
    entry = table_entry(model)
    if price_in is not None and price_out is not None:
        return Prices(float(price_in), float(price_out), "config")
    if entry is not None and not is_local(base_url):
        table_in, table_out = PRICE_TABLE[entry]
        source = f"table:{entry}" if price_in is None and price_out is None else f"config+table:{entry}"
        return Prices(
            float(price_in if price_in is not None else table_in),
            float(price_out if price_out is not None else table_out),
            source,
        )
    if is_local(base_url):
        return Prices(float(price_in or 0.0), float(price_out or 0.0), "local" if price_in is price_out else "config")
    raise ConfigError(
        f"no price known for black-box model {model!r} at {redact_secrets(base_url or '')}: "
        "give both --price-in and --price-out "
        f"(USD per million tokens; the table has {', '.join(sorted(PRICE_TABLE))})"
    )
