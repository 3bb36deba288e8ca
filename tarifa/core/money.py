"""Money columns, exact sums of decimal columns on every database, and which units are money."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

import iso4217
from django.db.models import Sum

from tarifa.core.errors import DomainError

# Every money column: 6 places keep sub-cent unit prices (token rates) exact; amounts charged are
# rounded to the currency's places when computed.
MONEY = dict(max_digits=20, decimal_places=6)
QUANTITY = dict(max_digits=24, decimal_places=6)


def column_limit(column: dict) -> Decimal:
    """What every value of a column of `column`'s size (MONEY, QUANTITY) stays below in absolute value."""
    return Decimal(10) ** (column["max_digits"] - column["decimal_places"])


MONEY_LIMIT = column_limit(MONEY)
MONEY_STEP = Decimal(1).scaleb(-MONEY["decimal_places"])  # the last place a money column keeps
QUANTITY_LIMIT = column_limit(QUANTITY)


def check_decimal(value: Decimal, *, field: str, column: dict = MONEY) -> Decimal:
    """`value` if a column of `column`'s size (MONEY, QUANTITY) holds it exactly; else DomainError
    invalid_number. PostgreSQL would fail the statement on a larger value (a 500), and both
    databases would round away an extra decimal place without a word."""
    places, limit = column["decimal_places"], column_limit(column)
    if not value.is_finite() or abs(value) >= limit or value.as_tuple().exponent < -places:
        raise DomainError("invalid_number", f"{field} must be below {limit:,.0f} in absolute value, with at most "
                          f"{places} decimal places.", field=field)
    return value


class DecimalSum(Sum):
    """SUM of a DecimalField. SQLite adds decimals as floating point (0.1 + 0.2 = 0.30000000000000004);
    its result is rounded back to the column's places, which is exact for sums below 10^9 at 6
    places. PostgreSQL's numeric sum is exact already."""

    def get_db_converters(self, connection):
        converters = super().get_db_converters(connection)
        places = getattr(self.output_field, "decimal_places", None)
        if connection.vendor == "sqlite" and places is not None:
            quantum = Decimal(1).scaleb(-places)
            converters = [*converters, lambda value, _expression, _connection: (
                None if value is None else Decimal(value).quantize(quantum))]
        return converters


# The codes of ISO 4217's current table (BRL, USD, EUR…). Plans and wallets may also count in a
# named credit unit (MESSAGES, TOKENS_1K): usage counted in one is not money, so nobody invoices it.
CURRENCIES = frozenset(code for code in iso4217.raw_table if code)
# Each currency's minor units (BRL 2: cents; JPY 0; KWD 3). Funds and metals have none ("N.A."):
# taken as 2.
MINOR_UNITS = {code: int(row["CcyMnrUnts"]) if row["CcyMnrUnts"].isdigit() else 2
               for code, row in iso4217.raw_table.items() if code}


def clean_currency_code(currency: str, *, field: str) -> str:
    """`currency` stripped and upper-cased if it is an ISO 4217 code (money, which can be invoiced);
    else DomainError invalid_currency naming `field`."""
    code = (currency or "").strip().upper()
    if code not in CURRENCIES:
        raise DomainError("invalid_currency", f"'{currency}' is not an ISO 4217 currency code (e.g. BRL).",
                          field=field)
    return code


def payable(amount: Decimal, currency: str) -> Decimal:
    """`amount` rounded half up to the currency's minor unit: what an invoice can ask for. Usage
    is charged to six places where a plan says so (tokens cost fractions of a cent each), and an
    invoice of 12.3456 BRL cannot be paid."""
    return amount.quantize(Decimal(1).scaleb(-MINOR_UNITS.get(currency, 2)), rounding=ROUND_HALF_UP)
