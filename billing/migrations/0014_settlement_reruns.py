"""A billing run that writes less (docs/billing.md, "Re-runs" and "Batches").

- `lines_digest`: a recomputed draft whose lines come out the same keeps its line rows.
- No index on `Settlement.run`, and room on every page (fillfactor 70): a re-run sets each
  draft's run, `computed_at` and `updated_at`, columns no index holds, so PostgreSQL can update
  the row in place (a HOT update) instead of inserting into every index of the table. Pages
  written before this migration keep their old packing until rewritten; new ones get the room.
- (period, status): the run's drafts are found by their period (billing/notifications.py) now
  that `run` has no index of its own.
- The run's staging rows (its groups and pairs) keep their key to the run without a database
  check (one per row at commit, ~50,000 for a run of 10,000 pairs) and without a single-column
  index (their composite keys start with the run).
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0013_cheaper_line_guard"),
    ]

    operations = [
        migrations.AddField(
            model_name="settlement",
            name="lines_digest",
            field=models.CharField(blank=True, default="", max_length=80),
        ),
        migrations.AlterField(
            model_name="billingrungroup",
            name="run",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="groups",
                to="billing.billingrun",
            ),
        ),
        migrations.AlterField(
            model_name="billingrunpair",
            name="run",
            field=models.ForeignKey(
                db_constraint=False,
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="pairs",
                to="billing.billingrun",
            ),
        ),
        migrations.AlterField(
            model_name="settlement",
            name="run",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.SET_NULL,
                related_name="settlements",
                to="billing.billingrun",
            ),
        ),
        migrations.AddIndex(
            model_name="settlement",
            index=models.Index(fields=["period", "status"], name="billing_set_period_status"),
        ),
        migrations.RunSQL(
            "ALTER TABLE billing_settlement SET (fillfactor = 70)",
            "ALTER TABLE billing_settlement RESET (fillfactor)",
        ),
    ]
