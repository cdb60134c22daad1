"""One pair that cannot be settled no longer stops a billing run (docs/billing.md, "When a pair
fails"): a run may end `partial`, a pair keeps its error, the run counts its failed pairs. A
settlement line's token and request sums become numeric(30,0), since a sum of bigint records can
pass bigint, and its description has no length limit (a greater_of of many charges is long).
"""

from django.db import migrations, models

import billing.models


class Migration(migrations.Migration):

    dependencies = [
        ('billing', '0004_line_kinds_vocabulary'),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='billingrun',
            name='billing_run_status_valid',
        ),
        migrations.AddField(
            model_name='billingrun',
            name='pairs_failed',
            field=models.IntegerField(default=0),
        ),
        migrations.AddField(
            model_name='billingrunpair',
            name='error',
            field=models.TextField(blank=True),
        ),
        migrations.AlterField(
            model_name='billingrun',
            name='status',
            field=models.CharField(choices=[('running', 'running'), ('done', 'done'), ('partial', 'partial'), ('failed', 'failed'), ('superseded', 'superseded')], default='running', max_length=16),
        ),
        migrations.AlterField(
            model_name='settlementline',
            name='cached_input_tokens',
            field=billing.models.CountField(decimal_places=0, default=0, max_digits=30),
        ),
        migrations.AlterField(
            model_name='settlementline',
            name='description',
            field=models.TextField(),
        ),
        migrations.AlterField(
            model_name='settlementline',
            name='input_tokens',
            field=billing.models.CountField(decimal_places=0, default=0, max_digits=30),
        ),
        migrations.AlterField(
            model_name='settlementline',
            name='output_tokens',
            field=billing.models.CountField(decimal_places=0, default=0, max_digits=30),
        ),
        migrations.AlterField(
            model_name='settlementline',
            name='requests',
            field=billing.models.CountField(decimal_places=0, default=0, max_digits=30),
        ),
        migrations.AddConstraint(
            model_name='billingrun',
            constraint=models.CheckConstraint(condition=models.Q(('status__in', ['running', 'done', 'partial', 'failed', 'superseded'])), name='billing_run_status_valid'),
        ),
    ]
