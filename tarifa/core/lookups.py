"""`field__any=[…]`: membership in a list, as one array parameter on PostgreSQL.

Django writes `field__in=[…]` as `IN (%s, %s, …)`, a placeholder per value, and its psycopg
backend binds parameters client-side: psycopg parses the statement text in Python to fill them.
With the ~700 summary ids of a thin fold batch, that parsing (and PostgreSQL's of the long
statement) took about an eighth of the batch. `= ANY('{…}'::bigint[])`, one array literal, means
the same to PostgreSQL; other databases get the plain IN.
Registered on every field by `register()`, which the core app calls when it loads.
"""

from __future__ import annotations

from django.db.models import Field, ForeignObject, Lookup
from django.db.models.fields.related_lookups import RelatedLookupMixin
from django.db.models.lookups import In

from tarifa.core.pgarrays import array_literal


class AnyOf(Lookup):
    lookup_name = "any"
    prepare_rhs = False

    def as_sql(self, compiler, connection):
        return In(self.lhs, list(self.rhs)).as_sql(compiler, connection)

    def as_postgresql(self, compiler, connection):
        lhs, lhs_params = self.process_lhs(compiler, connection)
        field = self.lhs.output_field
        element = field.rel_db_type(connection) if field.is_relation else field.cast_db_type(connection)
        return f"{lhs} = ANY(%s::{element}[])", [*lhs_params, array_literal(self.rhs)]


class RelatedAnyOf(RelatedLookupMixin, AnyOf):
    """`fk__any=[ids]` (related fields keep lookups of their own)."""


def register() -> None:
    Field.register_lookup(AnyOf)
    ForeignObject.register_lookup(RelatedAnyOf)
