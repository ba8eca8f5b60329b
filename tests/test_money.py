"""Money parsing: integers in minor units, every currency's exponent, floats refused."""

from __future__ import annotations

import pytest

from finsup_dagster.ledger.errors import InvalidInput
from finsup_dagster.ledger.money import Money, exponent, format_minor, to_minor


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ("10", "USD", 1000),
        ("10.0", "USD", 1000),
        ("10.00", "USD", 1000),
        ("10.000", "USD", 1000),  # extra zeros lose nothing
        ("0.01", "USD", 1),
        (" 7.5 ", "EUR", 750),
        ("1500", "JPY", 1500),
        ("1500.0", "JPY", 1500),
        ("1.234", "KWD", 1234),
        ("1.2", "KWD", 1200),
        ("1000000000000.00", "USD", 10**14),  # the largest amount accepted
    ],
)
def test_decimal_strings_become_exact_minor_units(amount: str, currency: str, minor: int) -> None:
    assert to_minor(amount, currency) == minor


@pytest.mark.parametrize(
    ("amount", "currency", "message"),
    [
        (10.5, "USD", "got float 10.5"),
        (10, "USD", "got int 10"),
        (True, "USD", "got bool"),
        ("10.001", "USD", "has 3 decimals; USD allows 2"),
        ("1500.5", "JPY", "has 1 decimals; JPY allows 0"),
        ("1.2345", "KWD", "has 4 decimals; KWD allows 3"),
        ("ten", "USD", "is not a decimal number"),
        ("1e3", "USD", "is not a decimal number"),
        ("1,000.00", "USD", "is not a decimal number"),
        ("-5.00", "USD", "is negative"),
        ("0.00", "USD", "is zero"),
        ("", "USD", "is not a decimal number"),
        ("10.00", "XXX", "unknown currency 'XXX'"),
        ("1000000000000.01", "USD", "larger than finsup accepts"),
    ],
)
def test_bad_amounts_are_refused_with_one_line(amount: object, currency: str, message: str) -> None:
    with pytest.raises(InvalidInput) as exc:
        to_minor(amount, currency)
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize(
    ("currency", "exp"), [("USD", 2), ("JPY", 0), ("KWD", 3), ("CLF", 4), ("EUR", 2)]
)
def test_exponents(currency: str, exp: int) -> None:
    assert exponent(currency) == exp


@pytest.mark.parametrize(
    ("minor", "currency", "text"),
    [(1050, "USD", "10.50"), (-5, "USD", "-0.05"), (1500, "JPY", "1500"), (1, "KWD", "0.001")],
)
def test_format_minor(minor: int, currency: str, text: str) -> None:
    assert format_minor(minor, currency) == text


def test_money_normalises_currency_and_refuses_float_minor() -> None:
    assert Money.parse("10.5", "usd") == Money(1050, "USD")
    assert str(Money(1050, "USD")) == "10.50 USD"
    with pytest.raises(InvalidInput):
        Money(10.5, "USD")  # type: ignore[arg-type]
