"""On PostgreSQL, usage is now deduplicated in SQL with its own content hash
(`metering.services.bulk.CONTENT_HASH`): rehash the records stored before, so that a resent
record still counts as a duplicate and not as a conflict. SQLite keeps the Python hash."""

from django.db import migrations


def rehash(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    from tarifa.metering.services.bulk import CONTENT_HASH

    table = apps.get_model("metering", "UsageRecord")._meta.db_table
    schema_editor.execute(f"UPDATE {table} AS u SET content_hash = {CONTENT_HASH.format(t='u')}")


class Migration(migrations.Migration):

    dependencies = [
        ("metering", "0005_usage_wallet_entry"),
    ]

    operations = [migrations.RunPython(rehash, migrations.RunPython.noop)]
