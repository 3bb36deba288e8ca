"""Grant draws: what each debit took from each grant, so that a refund gives granted credit back
to its grant (where it still expires) instead of as paid credit. Debits made before keep none:
their refunds are paid credit, as before."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('wallets', '0002_wallet_hot_updates'),
    ]

    operations = [
        migrations.CreateModel(
            name='GrantDraw',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('amount', models.DecimalField(decimal_places=6, max_digits=20)),
                ('entry', models.ForeignKey(on_delete=django.db.models.deletion.PROTECT, related_name='grant_draws', to='wallets.ledgerentry')),
                ('lot', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE, related_name='draws', to='wallets.grantlot')),
                ('refund', models.ForeignKey(blank=True, db_index=False, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='wallets.ledgerentry')),
            ],
        ),
    ]
