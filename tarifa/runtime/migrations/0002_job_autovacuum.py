"""The job table is a queue: every row is inserted, updated two or three times and later deleted.
Vacuum and analyze it early so the claim query keeps its plan and its partial index stays small."""

from django.db import migrations

from tarifa.core.storage import EARLY_AUTOVACUUM, storage_parameters


class Migration(migrations.Migration):
    dependencies = [("runtime", "0001_initial")]
    operations = [storage_parameters(("runtime_job",), **EARLY_AUTOVACUUM)]
