"""Money as the project keeps it: integer minor units with an ISO-4217 currency code.

One table of currency exponents, so every service (and every screen) reads 1500 JPY as
1500 yen and 1234 KWD as 1.234 dinars, never as hundredths.
"""
from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

# ISO-4217 currencies whose minor unit is not 1/100 (the rest have two decimals).
_EXPONENTS = {
    **dict.fromkeys(["BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF",
                     "UGX", "UYI", "VND", "VUV", "XAF", "XOF", "XPF"], 0),
    **dict.fromkeys(["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"], 3),
}


def exponent(currency: str | None) -> int:
    """Decimals of the currency's minor unit: 2 for EUR (and an unknown or missing code),
    0 for JPY, 3 for KWD."""
    return _EXPONENTS.get((currency or "").upper(), 2)


def minor_per_unit(currency: str | None) -> int:
    """Minor units in one unit of the currency: 100 for EUR, 1 for JPY, 1000 for KWD."""
    return 10 ** exponent(currency)


def to_minor(units: Decimal, currency: str | None) -> int:
    """Decimal units as minor units, half-up past the minor unit: 12.345 EUR -> 1235."""
    scaled = (units * minor_per_unit(currency)).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    return int(scaled)


def to_units(minor: int, currency: str | None) -> Decimal:
    """Minor units as an exact Decimal in the currency's own decimals: 1234 KWD -> 1.234."""
    return Decimal(int(minor)).scaleb(-exponent(currency))


def money_text(minor: Any, currency: str | None, grouped: bool = False) -> str:
    """An amount as people read it, code after: 4990 EUR -> '49.90 EUR', 1500 JPY -> '1500 JPY'
    (`grouped` adds thousands separators for screens: '1,234.56 EUR'). No code, no suffix."""
    places = exponent(currency)
    text = f"{to_units(minor, currency):{',' if grouped else ''}.{places}f}"
    return f"{text} {currency}" if currency else text
