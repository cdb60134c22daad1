"""A Celery run that stopped advancing is resumed (its pairs not done queued again) before it is
taken for dead: a pair task can be lost by the broker, not only delayed (billing/stale.py)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0016_runpair_fillfactor"),
    ]

    operations = [
        migrations.AddField(
            model_name="billingrun",
            name="resumed_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="billingrun",
            name="resumes",
            field=models.IntegerField(default=0),
        ),
    ]
