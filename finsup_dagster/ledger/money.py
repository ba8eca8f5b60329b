"""Money as integer minor units plus an ISO 4217 code.

Amounts arrive as decimal strings in major units ("10.50") and are stored as
integers in minor units (1050). Floats are refused outright: a float cannot
carry 0.10 exactly, and a money system that accepts one has already lost a cent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from finsup_dagster.ledger.errors import InvalidInput

# Exponents that differ from the usual 2 (ISO 4217, current list).
_EXPONENT_OVERRIDES: dict[str, int] = {
    # 0 decimals
    "BIF": 0,
    "CLP": 0,
    "DJF": 0,
    "GNF": 0,
    "ISK": 0,
    "JPY": 0,
    "KMF": 0,
    "KRW": 0,
    "PYG": 0,
    "RWF": 0,
    "UGX": 0,
    "UYI": 0,
    "VND": 0,
    "VUV": 0,
    "XAF": 0,
    "XOF": 0,
    "XPF": 0,
    # 3 decimals
    "BHD": 3,
    "IQD": 3,
    "JOD": 3,
    "KWD": 3,
    "LYD": 3,
    "OMR": 3,
    "TND": 3,
    # 4 decimals
    "CLF": 4,
    "UYW": 4,
}

# Active ISO 4217 codes with 2 decimals (funds and precious metals left out:
# nobody is paid in XAU).
_TWO_DECIMAL = """
AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BOV BRL BSD BTN
BWP BYN BZD CAD CDF CHE CHF CHW CNY COP COU CRC CUP CVE CZK DKK DOP DZD EGP ERN
ETB EUR FJD FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD
KES KGS KHR KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR
MVR MWK MXN MXV MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON
RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT
TOP TRY TTD TWD TZS UAH USD USN UYU UZS VES VED WST XCD XCG YER ZAR ZMW ZWG
""".split()  # noqa: SIM905 - a table reads better than 160 quoted strings

CURRENCY_EXPONENTS: dict[str, int] = {code: 2 for code in _TWO_DECIMAL} | _EXPONENT_OVERRIDES

_DECIMAL = re.compile(r"^(\d+)(?:\.(\d+))?$")

# 10^14 minor units (a trillion dollars) per amount: far above any real payment,
# and low enough that a full ingestion chunk of them still sums inside 64 bits.
MAX_MINOR = 10**14


def exponent(currency: str) -> int:
    """Number of decimal places of ``currency``; refuses unknown codes."""
    try:
        return CURRENCY_EXPONENTS[currency]
    except (KeyError, TypeError):
        raise InvalidInput(
            f"unknown currency {currency!r}: expected an ISO 4217 code such as USD"
        ) from None


def normalise_currency(raw: object) -> str:
    """Upper-cases and checks a currency code."""
    if not isinstance(raw, str):
        raise InvalidInput(f"currency must be a three-letter string, got {raw!r}")
    code = raw.strip().upper()
    exponent(code)
    return code


def to_minor(amount: object, currency: str) -> int:
    """Parses a positive decimal string in major units into minor units.

    Extra decimal places are accepted only when they are zeros ("10.000" USD
    is exactly 1000 cents); "10.001" USD cannot be represented and is refused.
    """
    if isinstance(amount, bool) or not isinstance(amount, str):
        kind = "float" if isinstance(amount, float) else type(amount).__name__
        raise InvalidInput(
            f'amount must be a decimal string such as "10.50", got {kind} {amount!r}'
        )
    exp = exponent(currency)
    text = amount.strip()
    if text.startswith("-"):
        raise InvalidInput(
            f"amount {amount!r} is negative: amounts are positive, the kind says the direction"
        )
    match = _DECIMAL.match(text)
    if match is None:
        raise InvalidInput(f"amount {amount!r} is not a decimal number")
    whole, frac = match.group(1), match.group(2) or ""
    if len(frac) > exp:
        if frac[exp:].strip("0"):
            raise InvalidInput(
                f"amount {amount!r} has {len(frac.rstrip('0'))} decimals; {currency} allows {exp}"
            )
        frac = frac[:exp]
    minor = int(whole) * 10**exp + (int(frac.ljust(exp, "0")) if exp else 0)
    if minor == 0:
        raise InvalidInput(f"amount {amount!r} is zero")
    if minor > MAX_MINOR:
        raise InvalidInput(
            f"amount {amount!r} is larger than finsup accepts ({MAX_MINOR} minor units)"
        )
    return minor


def format_minor(minor: int, currency: str) -> str:
    """Minor units back to a major-unit decimal string (1050, USD -> "10.50")."""
    exp = exponent(currency)
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), 10**exp)
    return f"{sign}{whole}.{frac:0{exp}d}" if exp else f"{sign}{whole}"


@dataclass(frozen=True, slots=True)
class Money:
    """An amount in minor units with its currency; arithmetic only within one currency."""

    minor: int
    currency: str

    def __post_init__(self) -> None:
        if isinstance(self.minor, bool) or not isinstance(self.minor, int):
            raise InvalidInput(f"minor units must be an integer, got {self.minor!r}")
        exponent(self.currency)

    @classmethod
    def parse(cls, amount: object, currency: object) -> Money:
        code = normalise_currency(currency)
        return cls(to_minor(amount, code), code)

    def __str__(self) -> str:
        return f"{format_minor(self.minor, self.currency)} {self.currency}"


def parse_amount_map(text: str | None) -> dict[str, str]:
    """``"USD=1000.00,JPY=150000,*=1000"`` → ``{"USD": "1000.00", ...}``; checked, not converted.

    ``*`` applies to every currency not named, in that currency's major units.
    """
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        code, sep, amount = part.partition("=")
        code = code.strip().upper()
        if not sep:
            raise InvalidInput(f"{part.strip()!r} is not CURRENCY=AMOUNT")
        if code != "*":
            to_minor(amount, normalise_currency(code))
        else:
            to_minor(amount, "USD")  # a shape check; converted per currency later
        out[code] = amount.strip()
    return out


def amount_for(amounts: dict[str, str], currency: str) -> int | None:
    """The minor-unit amount a map gives ``currency``, or None when it names none."""
    raw = amounts.get(currency, amounts.get("*"))
    return None if raw is None else to_minor(raw, currency)
