"""Invariants of settlements that PostgreSQL keeps, whatever client writes:

- a settled settlement (approved, disputed, invoiced, paid) keeps its money and its identity:
  only status moves forward (approved -> invoiced -> paid, any -> void) with their timestamps;
- the lines of a settlement that is not a draft are never inserted, updated or deleted;
- a settlement is never deleted once settled.

And one index on usage_record for billing: late records (usage that landed in a settled month)
are few, and each run looks for them in every earlier month; a partial index makes that a lookup
instead of a scan of the history.
"""

from django.db import migrations

TRIGGERS_SQL = """
CREATE FUNCTION billing_settlement_guard() RETURNS trigger LANGUAGE plpgsql AS $$
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
CREATE TRIGGER billing_settlement_guard BEFORE UPDATE OR DELETE ON billing_settlement
    FOR EACH ROW EXECUTE FUNCTION billing_settlement_guard();

CREATE FUNCTION billing_line_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    parent_status text;
BEGIN
    SELECT status INTO parent_status FROM billing_settlement
        WHERE id = (CASE WHEN TG_OP = 'INSERT' THEN NEW.settlement_id ELSE OLD.settlement_id END);
    -- No parent row: the settlement is being deleted (a draft, or the guard above refused it).
    IF parent_status IS NOT NULL AND parent_status <> 'draft' THEN
        RAISE EXCEPTION 'lines of a % settlement never change (% refused)', parent_status, TG_OP
            USING ERRCODE = 'restrict_violation';
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER billing_line_guard BEFORE INSERT OR UPDATE OR DELETE ON billing_settlementline
    FOR EACH ROW EXECUTE FUNCTION billing_line_guard();

CREATE INDEX IF NOT EXISTS billing_usage_late ON usage_record (licensor_id, host_id, occurred_at)
    WHERE late;
"""

DROP_SQL = """
DROP INDEX IF EXISTS billing_usage_late;
DROP TRIGGER billing_line_guard ON billing_settlementline;
DROP FUNCTION billing_line_guard();
DROP TRIGGER billing_settlement_guard ON billing_settlement;
DROP FUNCTION billing_settlement_guard();
"""


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0001_initial"),
        ("usage", "0001_initial"),
    ]

    operations = [migrations.RunSQL(TRIGGERS_SQL, DROP_SQL)]
