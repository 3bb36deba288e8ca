"""A prepaid fold rewrites the wallet of every customer it charges (balance, granted credit),
once per batch. Half-empty pages keep those updates HOT on PostgreSQL (see
metering 0009_summaries_hot_updates)."""

from django.db import migrations

from tarifa.core.storage import storage_parameters


class Migration(migrations.Migration):
    dependencies = [("wallets", "0001_initial")]
    operations = [storage_parameters(("wallets_wallet",), fillfactor=50)]
