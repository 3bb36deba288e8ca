"""The job table is a queue: every row is inserted, updated two or three times and later deleted.
Vacuum and analyze it early so the claim query keeps its plan and its partial index stays small."""

from django.db import migrations

SETTINGS = ("autovacuum_vacuum_scale_factor = 0.01, autovacuum_vacuum_insert_scale_factor = 0.01, "
            "autovacuum_analyze_scale_factor = 0.005")


def tune(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER TABLE runtime_job SET ({SETTINGS})")


def untune(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("ALTER TABLE runtime_job RESET (autovacuum_vacuum_scale_factor, "
                              "autovacuum_vacuum_insert_scale_factor, autovacuum_analyze_scale_factor)")


class Migration(migrations.Migration):
    dependencies = [("runtime", "0001_initial")]
    operations = [migrations.RunPython(tune, untune)]
