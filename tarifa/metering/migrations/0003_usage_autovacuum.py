"""Usage rows are inserted and then updated once (rated → billed) in bulk, and pending markers churn
constantly: PostgreSQL's default autovacuum (20 % of the table) lets a large load run on stale
statistics and a partial index full of dead entries. Vacuum and analyze these tables early."""

from django.db import migrations

TABLES = ("metering_usagerecord", "metering_pendingsummary", "metering_summary")
SETTINGS = ("autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_insert_scale_factor = 0.01, "
            "autovacuum_analyze_scale_factor = 0.005")


def tune(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for table in TABLES:
            schema_editor.execute(f"ALTER TABLE {table} SET ({SETTINGS})")


def untune(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        for table in TABLES:
            schema_editor.execute(f"ALTER TABLE {table} RESET (autovacuum_vacuum_scale_factor, "
                                  "autovacuum_vacuum_insert_scale_factor, autovacuum_analyze_scale_factor)")


class Migration(migrations.Migration):
    dependencies = [("metering", "0002_summary_last_event_at")]
    operations = [migrations.RunPython(tune, untune)]
