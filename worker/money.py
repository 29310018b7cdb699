"""The one rounding rule for money, and how far the proxy's float figures may stray.

Every amount is stored as numeric(20, 10): rounded to 10 places, half to even, in Python, before
a value reaches the database, so PostgreSQL never rounds (it would round half away from zero) and
a sum of many rounded amounts carries no bias (docs/architecture.md, "Money"). Both the ledger
(worker.credits) and the spend sync (worker.spend) round with it; neither imports the other for it.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

PLACES = Decimal("1e-10")

# How far a figure the proxy reports may stray from the ledger's and still agree: it stores
# floats, and its sums of them carry float noise.
PROXY_TOLERANCE = Decimal("1e-6")


def money(value: Decimal) -> Decimal:
    return value.quantize(PLACES, rounding=ROUND_HALF_EVEN)
