"""Card numbers are refused before anything is parsed, stored or logged.

The API takes provider tokens only (``tok_...``, ``pm_...``): a body that holds
something shaped like a card number (13 to 19 digits, bare or grouped the way
cards are printed, passing the Luhn check) is refused whole.
"""

from __future__ import annotations

import re

from fastapi import Request

from panthera.payments.errors import CardDataRefused

_CANDIDATES = re.compile(
    rb"(?<!\d)(?:"
    rb"\d{13,19}"  # bare
    rb"|\d{4}([ -])\d{4}\1\d{4}\1\d{1,7}"  # 4-4-4-4 (and 4-4-4-1..7)
    rb"|\d{4}([ -])\d{6}\2\d{4,5}"  # 4-6-5 (American Express), 4-6-4 (Diners)
    rb")(?!\d)"
)
# A UUID's groups may be all digits and pass the checksum (about 1 in 2,600 order
# ids does); no card is printed 8-4-4-4-12, so UUIDs are set aside before the scan.
_UUID = re.compile(
    rb"(?<![0-9A-Fa-f-])[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}"
    rb"(?![0-9A-Fa-f-])"
)


def luhn_valid(digits: bytes) -> bool:
    """Whether a string of ASCII digits passes the Luhn checksum."""
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = char - 48
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def contains_card_number(data: bytes) -> bool:
    """Whether ``data`` holds anything that looks like a payment card number."""
    for match in _CANDIDATES.finditer(_UUID.sub(b"<uuid>", data)):
        digits = bytes(char for char in match.group(0) if 48 <= char <= 57)
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            return True
    return False


async def refuse_card_numbers(request: Request) -> None:
    """A route dependency: 400 ``card_data_refused`` when the body holds a card number.

    It runs before the body is validated, so the number reaches no model, row or
    log line, and the answer does not repeat it.
    """
    if contains_card_number(await request.body()):
        raise CardDataRefused(
            "Send a payment method token from the payment provider (such as tok_visa), "
            "never the card number."
        )
