"""The price table: USD per million input tokens, by provider and API model.

``ragmart/embedding/providers/prices.json`` unless ``RAGMART_PRICE_TABLE`` points to another
file. A run's estimated cost (``embedding_runs.estimated_cost_usd``) is its tokens at this price.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

PRICE_TABLE_ENV = "RAGMART_PRICE_TABLE"
DEFAULT_PRICE_TABLE = Path(__file__).resolve().parent / "providers" / "prices.json"


def load_price_table(path: str | Path | None = None) -> dict[str, dict[str, float]]:
    """{provider: {api model or "*": USD per 1M input tokens}} from ``path``, else
    $RAGMART_PRICE_TABLE, else the bundled ``prices.json``."""
    source = Path(path or os.environ.get(PRICE_TABLE_ENV, "").strip() or DEFAULT_PRICE_TABLE)
    fix = f"fix the file or point {PRICE_TABLE_ENV} to a valid one (default {DEFAULT_PRICE_TABLE})"
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"price table {source} not found; {fix}") from None
    except (OSError, ValueError) as exc:
        raise ValueError(f"price table {source} is not readable JSON ({exc}); {fix}") from None
    prices = data.get("prices") if isinstance(data, dict) else None
    if not isinstance(prices, dict):
        raise ValueError(
            f'price table {source} needs a top-level "prices" object '
            f'({{"prices": {{"openai": {{"text-embedding-3-small": 0.02}}}}}}); {fix}'
        )
    table: dict[str, dict[str, float]] = {}
    for provider, models in prices.items():
        if not isinstance(models, dict):
            raise ValueError(f"price table {source}: prices.{provider} must be an object; {fix}")
        for model, price in models.items():
            ok = isinstance(price, int | float) and not isinstance(price, bool)
            if not ok or not math.isfinite(price) or price < 0:
                raise ValueError(
                    f"price table {source}: prices.{provider}.{model} must be a non-negative "
                    f"number of USD per 1M tokens, got {price!r}; {fix}"
                )
            table.setdefault(provider, {})[model] = float(price)
    return table


def price_per_million(
    table: dict[str, dict[str, float]], provider: str, embedding_model: str
) -> float | None:
    """The price of ``embedding_model`` (its API model: the part before '@'), or None."""
    models = table.get(provider, {})
    return models.get(embedding_model.split("@", 1)[0], models.get("*"))
