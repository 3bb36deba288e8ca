"""Usage rows are inserted and then updated once (rated → billed) in bulk, and pending markers churn
constantly: PostgreSQL's default autovacuum (20 % of the table) lets a large load run on stale
statistics and a partial index full of dead entries. Vacuum and analyze these tables early."""

from django.db import migrations

from tarifa.core.storage import EARLY_AUTOVACUUM, storage_parameters


class Migration(migrations.Migration):
    dependencies = [("metering", "0002_summary_last_event_at")]
    operations = [storage_parameters(("metering_usagerecord", "metering_pendingsummary", "metering_summary"),
                                     **EARLY_AUTOVACUUM)]
