"""PostgreSQL storage parameters for migrations (no-ops on SQLite, which has none)."""

from __future__ import annotations

from django.db import migrations

# For tables whose rows churn (queues, markers, rows updated once in bulk): PostgreSQL's default
# waits for 20 % of the table to change, which lets a large load run on stale statistics.
EARLY_AUTOVACUUM = {"autovacuum_vacuum_scale_factor": 0.01, "autovacuum_vacuum_insert_scale_factor": 0.01,
                    "autovacuum_analyze_scale_factor": 0.005}


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
