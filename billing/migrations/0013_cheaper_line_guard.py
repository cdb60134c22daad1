"""Cheaper writes of settlements and lines for a billing run's batches (docs/billing.md,
"Invariants"):

1. The guard of the lines (a line of a settlement that is not a draft is never inserted, updated
   or deleted) checks each statement once instead of each row: 0002's BEFORE ... FOR EACH ROW
   trigger looked the parent's status up per line (40,000 lookups for the COPYs of a 10,000-pair
   run). Three AFTER ... FOR EACH STATEMENT triggers, one per event (a transition table is only
   allowed on a trigger of one event), join the statement's lines with their settlements once
   and raise the same restrict_violation, naming the first such settlement, its status and the
   operation. COPY FROM fires them like INSERT. A line whose settlement no longer exists passes,
   as before: the settlement is being deleted (a draft, or its own guard refused it).

   The query is run with EXECUTE, planned at each statement for its transition table's size:
   a static query's plan is cached for the session, and the plan of a first 2,000-line batch
   (hash join over the settlements) would then serve every later one-line insert.

2. Three indexes that every insert and non-HOT update paid and no query needs: billing_settlement's
   own host_id index (the (host_id, period) index serves lookups by host), its stripe_invoice_id
   varchar_pattern_ops "_like" index (unique=True builds it on PostgreSQL for LIKE queries;
   invoice ids are only looked up by equality, and the admin does not search them), and
   billing_settlementline's settlement_id index (the unique (settlement_id, position) constraint's
   index serves lookups by settlement and the foreign key's checks). The model says so with
   db_index=False and a UniqueConstraint of the same name as unique=True's; the database only
   drops the three indexes: Django's own operations would drop and re-add (and so re-validate)
   the two foreign keys and rebuild the unique constraint under a new name.

The reverse restores 0002's row trigger and function exactly, and the three indexes by their
names.
"""

import importlib

import django.db.models.deletion
from django.db import migrations, models

LINE_GUARD_SQL = """
DROP TRIGGER billing_line_guard ON billing_settlementline;
DROP FUNCTION billing_line_guard();

CREATE FUNCTION billing_line_guard_statement() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    lines text;
    bad_id uuid;
    bad_status text;
BEGIN
    -- The settlements of the statement's lines: after the change for INSERT, before it for
    -- DELETE, both for UPDATE (a line moved from or to a settled settlement is refused).
    lines := CASE TG_OP
        WHEN 'INSERT' THEN 'SELECT settlement_id FROM billing_new_lines'
        WHEN 'DELETE' THEN 'SELECT settlement_id FROM billing_old_lines'
        ELSE 'SELECT settlement_id FROM billing_old_lines'
            || ' UNION SELECT settlement_id FROM billing_new_lines'
    END;
    -- No parent row: the settlement is being deleted (a draft, or its guard refused it).
    EXECUTE 'SELECT s.id, s.status FROM billing_settlement s WHERE s.status <> ''draft'''
        || ' AND s.id IN (' || lines || ') ORDER BY s.id LIMIT 1'
        INTO bad_id, bad_status;
    IF bad_id IS NOT NULL THEN
        RAISE EXCEPTION 'settlement % is %: its lines never change (% refused)',
            bad_id, bad_status, TG_OP
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER billing_line_guard_insert AFTER INSERT ON billing_settlementline
    REFERENCING NEW TABLE AS billing_new_lines
    FOR EACH STATEMENT EXECUTE FUNCTION billing_line_guard_statement();
CREATE TRIGGER billing_line_guard_update AFTER UPDATE ON billing_settlementline
    REFERENCING OLD TABLE AS billing_old_lines NEW TABLE AS billing_new_lines
    FOR EACH STATEMENT EXECUTE FUNCTION billing_line_guard_statement();
CREATE TRIGGER billing_line_guard_delete AFTER DELETE ON billing_settlementline
    REFERENCING OLD TABLE AS billing_old_lines
    FOR EACH STATEMENT EXECUTE FUNCTION billing_line_guard_statement();
"""

LINE_GUARD_REVERSE_SQL = """
DROP TRIGGER billing_line_guard_insert ON billing_settlementline;
DROP TRIGGER billing_line_guard_update ON billing_settlementline;
DROP TRIGGER billing_line_guard_delete ON billing_settlementline;
DROP FUNCTION billing_line_guard_statement();
"""

# Django's names for the indexes of 0001 (host, settlement) and 0003 (stripe_invoice_id).
INDEXES_SQL = """
DROP INDEX billing_settlement_host_id_48fbc8b9;
DROP INDEX billing_settlement_stripe_invoice_id_7fc8e072_like;
DROP INDEX billing_settlementline_settlement_id_feb96c49;
"""

INDEXES_REVERSE_SQL = """
CREATE INDEX billing_settlement_host_id_48fbc8b9 ON billing_settlement (host_id);
CREATE INDEX billing_settlement_stripe_invoice_id_7fc8e072_like
    ON billing_settlement (stripe_invoice_id varchar_pattern_ops);
CREATE INDEX billing_settlementline_settlement_id_feb96c49 ON billing_settlementline (settlement_id);
"""


def _line_guard_of_0002() -> str:
    """0002's row trigger and its function as they were, for the reverse migration."""
    sql = importlib.import_module("billing.migrations.0002_triggers").TRIGGERS_SQL
    start = sql.index("CREATE FUNCTION billing_line_guard()")
    end = sql.index("CREATE INDEX IF NOT EXISTS billing_usage_late")
    return sql[start:end]


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0012_settlement_refunds"),
        ("licensing", "0005_licensor_payout"),
    ]

    operations = [
        migrations.RunSQL(LINE_GUARD_SQL, LINE_GUARD_REVERSE_SQL + _line_guard_of_0002()),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="settlement",
                    name="host",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="settlements",
                        to="licensing.host",
                    ),
                ),
                migrations.AlterField(
                    model_name="settlement",
                    name="stripe_invoice_id",
                    field=models.CharField(blank=True, max_length=255, null=True),
                ),
                migrations.AddConstraint(
                    model_name="settlement",
                    constraint=models.UniqueConstraint(
                        fields=("stripe_invoice_id",),
                        name="billing_settlement_stripe_invoice_id_key",
                    ),
                ),
                migrations.AlterField(
                    model_name="settlementline",
                    name="settlement",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="lines",
                        to="billing.settlement",
                    ),
                ),
            ],
            database_operations=[migrations.RunSQL(INDEXES_SQL, INDEXES_REVERSE_SQL)],
        ),
    ]
