"""Summaries keep what prepaid wallets paid of their total, so the monthly close can invoice the
rest whatever the customer's billing mode is now. Existing summaries get it from their billed
records that a wallet paid."""

from collections import defaultdict
from decimal import Decimal

from django.db import migrations, models


def fill_wallet_paid(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor == "postgresql":  # one statement, through the wallet_entry partial index
        schema_editor.execute(
            """UPDATE metering_summary s SET wallet_paid_amount = v.paid
               FROM (SELECT summary_id, sum(charged_amount) AS paid FROM metering_usagerecord
                     WHERE wallet_entry_id IS NOT NULL AND status = 'billed' GROUP BY summary_id) v
               WHERE s.id = v.summary_id""")
        return
    UsageRecord, Summary = apps.get_model("metering", "UsageRecord"), apps.get_model("metering", "Summary")
    paid = defaultdict(Decimal)  # summed in Decimal: SQLite's SUM is floating point
    for summary_id, amount in (UsageRecord.objects.filter(wallet_entry__isnull=False, status="billed")
                               .values_list("summary_id", "charged_amount").iterator()):
        paid[summary_id] += amount
    for summary_id, amount in paid.items():
        Summary.objects.filter(pk=summary_id).update(wallet_paid_amount=amount)


class Migration(migrations.Migration):

    dependencies = [
        ('metering', '0010_plan_terms_in_range'),
    ]

    operations = [
        migrations.AddField(
            model_name='summary',
            name='wallet_paid_amount',
            field=models.DecimalField(decimal_places=6, default=Decimal('0'), max_digits=20),
        ),
        migrations.RunPython(fill_wallet_paid, migrations.RunPython.noop),
    ]
