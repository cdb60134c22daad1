"""Stripe invoicing: the invoice id and the invoicing claim on settlements, the processed-events
table of the webhook, and the settlement guard extended for them:

- `stripe_invoice_id` is set once, NULL -> value, only on an approved settlement and only while
  it stays approved or moves to invoiced; afterwards it never changes;
- status still moves only approved -> invoiced -> paid (and to void), as in 0002.

The function is replaced (CREATE OR REPLACE), the trigger of 0002 keeps calling it.
"""

import importlib

from django.db import migrations, models

GUARD_SQL = """
CREATE OR REPLACE FUNCTION billing_settlement_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF OLD.status <> 'draft' THEN
            RAISE EXCEPTION 'settlement % is %: it cannot be deleted', OLD.id, OLD.status
                USING ERRCODE = 'restrict_violation';
        END IF;
        RETURN OLD;
    END IF;
    IF OLD.status <> 'draft' AND (
        NEW.total IS DISTINCT FROM OLD.total
        OR NEW.usage_digest IS DISTINCT FROM OLD.usage_digest
        OR NEW.terms_digest IS DISTINCT FROM OLD.terms_digest
        OR NEW.currency IS DISTINCT FROM OLD.currency
        OR NEW.period IS DISTINCT FROM OLD.period
        OR NEW.host_id IS DISTINCT FROM OLD.host_id
        OR NEW.licensor_id IS DISTINCT FROM OLD.licensor_id
        OR NEW.record_count IS DISTINCT FROM OLD.record_count
        OR NEW.flags IS DISTINCT FROM OLD.flags
        OR NEW.computed_at IS DISTINCT FROM OLD.computed_at
        OR NEW.dispute_reason IS DISTINCT FROM OLD.dispute_reason
    ) THEN
        RAISE EXCEPTION 'settlement % is %: its contents never change', OLD.id, OLD.status
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF OLD.stripe_invoice_id IS NOT NULL
        AND NEW.stripe_invoice_id IS DISTINCT FROM OLD.stripe_invoice_id THEN
        RAISE EXCEPTION 'settlement % has Stripe invoice %: it never changes',
            OLD.id, OLD.stripe_invoice_id USING ERRCODE = 'restrict_violation';
    END IF;
    IF OLD.stripe_invoice_id IS NULL AND NEW.stripe_invoice_id IS NOT NULL
        AND NOT (OLD.status = 'approved' AND NEW.status IN ('approved', 'invoiced')) THEN
        RAISE EXCEPTION 'settlement % is %: only an approved settlement gets a Stripe invoice',
            OLD.id, OLD.status USING ERRCODE = 'check_violation';
    END IF;
    IF NEW.status IS DISTINCT FROM OLD.status AND NOT (
        (OLD.status = 'draft' AND NEW.status IN ('approved', 'disputed', 'void'))
        OR (OLD.status = 'approved' AND NEW.status IN ('invoiced', 'void'))
        OR (OLD.status = 'invoiced' AND NEW.status IN ('paid', 'void'))
        OR (OLD.status IN ('disputed', 'paid') AND NEW.status = 'void')
    ) THEN
        RAISE EXCEPTION 'settlement % cannot go from % to %', OLD.id, OLD.status, NEW.status
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;
"""


def _guard_of_0002() -> str:
    """0002's function as it was, for the reverse migration."""
    sql = importlib.import_module("billing.migrations.0002_triggers").TRIGGERS_SQL
    function = sql[: sql.index("CREATE TRIGGER billing_settlement_guard")]
    return function.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0002_triggers"),
        ("licensing", "0002_licensor_membership"),
    ]

    operations = [
        migrations.CreateModel(
            name="StripeEvent",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("event_id", models.CharField(max_length=255, unique=True)),
                ("type", models.CharField(max_length=100)),
                ("object_id", models.CharField(blank=True, max_length=255)),
                ("outcome", models.CharField(blank=True, max_length=200)),
                ("received_at", models.DateTimeField(auto_now_add=True)),
                ("processed_at", models.DateTimeField(blank=True, null=True)),
            ],
            options={
                "ordering": ["-received_at"],
            },
        ),
        migrations.AlterModelOptions(
            name="settlement",
            options={
                "ordering": ["-period", "licensor__slug", "host__slug", "currency"],
                "permissions": [("send_invoice", "Can send a settlement's invoice through Stripe")],
            },
        ),
        migrations.AddField(
            model_name="settlement",
            name="invoice_error",
            field=models.TextField(blank=True),
        ),
        migrations.AddField(
            model_name="settlement",
            name="invoiced_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="settlement",
            name="invoicing_started_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="settlement",
            name="paid_at",
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name="settlement",
            name="stripe_invoice_id",
            field=models.CharField(blank=True, max_length=255, null=True, unique=True),
        ),
        migrations.AddConstraint(
            model_name="settlement",
            constraint=models.CheckConstraint(
                condition=models.Q(
                    models.Q(("status__in", ["invoiced", "paid"]), _negated=True),
                    ("stripe_invoice_id__isnull", False),
                    _connector="OR",
                ),
                name="billing_settlement_invoiced_has_invoice",
            ),
        ),
        migrations.RunSQL(GUARD_SQL, _guard_of_0002()),
    ]
