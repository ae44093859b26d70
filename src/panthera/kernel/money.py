"""Money as integer minor units with a currency; exact decimal strings at the edges."""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

# ISO 4217 minor-unit exponents of the currencies a shop is likely to price in.
MINOR_UNITS: dict[str, int] = {
    "USD": 2, "EUR": 2, "GBP": 2, "CHF": 2, "CAD": 2, "AUD": 2, "NZD": 2, "SEK": 2,
    "NOK": 2, "DKK": 2, "PLN": 2, "CZK": 2, "HUF": 2, "BRL": 2, "MXN": 2, "INR": 2,
    "CNY": 2, "HKD": 2, "SGD": 2, "ZAR": 2, "TRY": 2, "ILS": 2, "AED": 2,
    "JPY": 0, "KRW": 0, "ISK": 0, "CLP": 0, "VND": 0,
    "BHD": 3, "KWD": 3, "OMR": 3, "JOD": 3, "TND": 3,
}  # fmt: skip

_AMOUNT = re.compile(r"^\d{1,15}(\.\d{1,3})?$")


class InvalidAmount(ValueError):
    """An amount that is not a non-negative decimal with the currency's precision."""


def minor_units(currency: str) -> int:
    """The number of decimal places of a currency."""
    try:
        return MINOR_UNITS[currency]
    except KeyError:
        raise InvalidAmount(f"unsupported currency {currency!r}") from None


@dataclass(frozen=True, order=True)
class Money:
    """An amount in a currency's smallest unit (cents for USD)."""

    amount: int
    currency: str

    @classmethod
    def parse(cls, text: str, currency: str) -> Money:
        """From a decimal string like ``"19.99"``; more places than the currency has is an error."""
        places = minor_units(currency)
        if not isinstance(text, str) or not _AMOUNT.match(text):
            raise InvalidAmount("amounts are non-negative decimal strings such as '19.99'")
        try:
            value = Decimal(text)
        except InvalidOperation as exc:
            raise InvalidAmount(f"{text!r} is not a decimal amount") from exc
        scaled = value.scaleb(places)
        if scaled != scaled.to_integral_value():
            raise InvalidAmount(f"{currency} amounts have at most {places} decimal places")
        return cls(int(scaled), currency)

    def format(self) -> str:
        """The exact decimal string, with exactly the currency's number of places."""
        places = minor_units(self.currency)
        if places == 0:
            return str(self.amount)
        sign = "-" if self.amount < 0 else ""
        whole, fraction = divmod(abs(self.amount), 10**places)
        return f"{sign}{whole}.{fraction:0{places}d}"

    def __add__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount + other.amount, self.currency)

    def __sub__(self, other: Money) -> Money:
        self._same_currency(other)
        return Money(self.amount - other.amount, self.currency)

    def times(self, quantity: int) -> Money:
        return Money(self.amount * quantity, self.currency)

    def _same_currency(self, other: Money) -> None:
        if other.currency != self.currency:
            raise ValueError(f"cannot combine {self.currency} and {other.currency}")
