"""PostgreSQL storage parameters for migrations (no-ops on SQLite, which has none)."""

from __future__ import annotations

from django.db import migrations


def storage_parameters(tables: tuple[str, ...], **parameters) -> migrations.RunPython:
    """A migration operation that sets `parameters` (e.g. fillfactor=50) on `tables`, and resets
    them when migrated backwards. New settings apply to pages written from then on."""
    assignments = ", ".join(f"{name} = {value}" for name, value in parameters.items())
    names = ", ".join(parameters)

    def apply(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            for table in tables:
                schema_editor.execute(f"ALTER TABLE {table} SET ({assignments})")

    def revert(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            for table in tables:
                schema_editor.execute(f"ALTER TABLE {table} RESET ({names})")

    return migrations.RunPython(apply, revert)
