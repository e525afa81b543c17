"""Overhead of aggregator.money.quantize (currency lookup, mode check) over a bare Decimal.quantize."""

from __future__ import annotations

import os
import sys
from decimal import ROUND_HALF_UP, Decimal

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from aggregator.money import quantize
from bench._timing import best_of

amount = Decimal("12345.678901")
cent = Decimal("0.01")
ours = best_of(lambda: quantize(amount, "USD", rounding="ROUND_HALF_UP"), number=20000)
baseline = best_of(lambda: amount.quantize(cent, rounding=ROUND_HALF_UP), number=20000)
print(
    f"money.quantize: {ours * 1e6:.2f} µs; bare Decimal.quantize: {baseline * 1e6:.2f} µs; ratio x{ours / baseline:.1f}"
)
