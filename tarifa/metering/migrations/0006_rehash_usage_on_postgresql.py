"""Once rehashed usage stored before PostgreSQL deduplicated in SQL. PostgreSQL now hashes a stored
record's columns only when its id is sent again (`metering.services.bulk.CONTENT_HASH`), whatever
hash was stored, so there is nothing left to rewrite: kept, empty, for the migration graph."""

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("metering", "0005_usage_wallet_entry"),
    ]

    operations = []
