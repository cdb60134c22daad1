"""A refund paid back by Stripe is a step of the settlement's history (billing/refunds.py)."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0014_settlement_reruns"),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name="settlementevent",
            name="billing_event_action_valid",
        ),
        migrations.AddConstraint(
            model_name="settlementevent",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    (
                        "action__in",
                        (
                            "computed",
                            "recomputed",
                            "approved",
                            "disputed",
                            "responded",
                            "superseded",
                            "revised",
                            "deemed",
                            "invoiced",
                            "paid",
                            "refunded",
                            "voided",
                        ),
                    )
                ),
                name="billing_event_action_valid",
            ),
        ),
    ]
