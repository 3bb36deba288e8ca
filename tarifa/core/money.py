"""Money columns and exact sums of decimal columns on every database."""

from __future__ import annotations

from decimal import Decimal

from django.db.models import Sum

# Every money column: 6 places keep sub-cent unit prices (token rates) exact; amounts charged are
# rounded to the currency's places when computed.
MONEY = dict(max_digits=20, decimal_places=6)
QUANTITY = dict(max_digits=24, decimal_places=6)


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
