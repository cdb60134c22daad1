"""The rules of the books, enforced by PostgreSQL whatever client writes (docs/ledger.md).

Every error raised here starts with "ledger:" and uses an integrity SQLSTATE (class 23), so that
Django raises IntegrityError and a psql user sees which rule was broken.
"""

from django.db import migrations

FORWARD = """
-- The top-level transaction that inserted an entry: postings may be added to an entry only in
-- that transaction (pg_current_xact_id() is the top-level id even inside a savepoint), so a
-- committed entry can never gain a leg. Not in the Django model: only the triggers use it.
ALTER TABLE ledger_journalentry
    ADD COLUMN xact_id xid8 NOT NULL DEFAULT pg_current_xact_id();

-- Append-only: no UPDATE, no DELETE of entries, postings or accounts.
CREATE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger: % on % is refused: the books are append-only (post a reversal instead)',
        TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'restrict_violation';
END
$$;

-- No TRUNCATE while the books hold an entry (truncating empty tables loses nothing, and it is
-- how Django's test runner resets the database; tests clear the books first, see
-- ledger/testing.py).
CREATE FUNCTION ledger_refuse_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM ledger_journalentry) THEN
        RAISE EXCEPTION 'ledger: TRUNCATE on % is refused: the books are append-only', TG_TABLE_NAME
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NULL;
END
$$;

-- Each entry extends the chain: sequence 1 starts from the genesis hash, sequence n > 1 names
-- the hash of entry n - 1 as its prev_hash. With UNIQUE (sequence) this makes the chain one line
-- without forks or gaps; the hash itself is recomputed by manage.py verify_ledger.
CREATE FUNCTION ledger_entry_before_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    expected varchar;
BEGIN
    NEW.xact_id := pg_current_xact_id();
    IF NEW.sequence = 1 THEN
        expected := repeat('0', 64);
    ELSE
        SELECT e.hash INTO expected FROM ledger_journalentry e WHERE e.sequence = NEW.sequence - 1;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'ledger: journal entry % (sequence %) does not extend the chain: no entry has sequence %',
                NEW.idempotency_key, NEW.sequence, NEW.sequence - 1
                USING ERRCODE = 'check_violation';
        END IF;
    END IF;
    IF NEW.prev_hash IS DISTINCT FROM expected THEN
        RAISE EXCEPTION 'ledger: journal entry % (sequence %) does not extend the chain: prev_hash % is not %',
            NEW.idempotency_key, NEW.sequence, NEW.prev_hash, expected
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;

-- A posting is in its account's currency, and joins an entry of the current transaction only.
CREATE FUNCTION ledger_posting_before_insert() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    account_currency varchar;
    entry_xact xid8;
BEGIN
    SELECT a.currency INTO account_currency FROM ledger_account a WHERE a.id = NEW.account_id;
    IF FOUND AND account_currency IS DISTINCT FROM NEW.currency THEN
        RAISE EXCEPTION 'ledger: posting in % on account % whose currency is %',
            NEW.currency, NEW.account_id, account_currency
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT e.xact_id INTO entry_xact FROM ledger_journalentry e WHERE e.id = NEW.entry_id;
    IF FOUND AND entry_xact <> pg_current_xact_id() THEN
        RAISE EXCEPTION 'ledger: journal entry % was posted by an earlier transaction; it cannot gain postings',
            NEW.entry_id
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NEW;
END
$$;

-- The balance rule, run at commit for every new entry and every new posting: at least two
-- postings, a zero sum in every currency, and a reversal that exactly undoes its original on
-- every account. The posting-level trigger is what still catches a leg added after a client ran
-- SET CONSTRAINTS ... IMMEDIATE.
CREATE FUNCTION ledger_check_entry(p_entry bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    leg record;
    legs integer := 0;
    original bigint;
    mismatch record;
BEGIN
    FOR leg IN
        SELECT p.currency, sum(p.amount) AS total, count(*) AS n
        FROM ledger_posting p WHERE p.entry_id = p_entry GROUP BY p.currency
    LOOP
        IF leg.total <> 0 THEN
            RAISE EXCEPTION 'ledger: journal entry % does not balance in %: its postings sum to % minor units',
                p_entry, leg.currency, leg.total
                USING ERRCODE = 'check_violation';
        END IF;
        legs := legs + leg.n;
    END LOOP;
    IF legs < 2 THEN
        RAISE EXCEPTION 'ledger: journal entry % has % posting(s); an entry needs at least two',
            p_entry, legs
            USING ERRCODE = 'check_violation';
    END IF;
    SELECT e.reverses_id INTO original FROM ledger_journalentry e WHERE e.id = p_entry;
    IF original IS NOT NULL THEN
        SELECT s.account_id, sum(s.amount) AS net INTO mismatch
        FROM (
            SELECT account_id, amount FROM ledger_posting WHERE entry_id = p_entry
            UNION ALL
            SELECT account_id, amount FROM ledger_posting WHERE entry_id = original
        ) s
        GROUP BY s.account_id HAVING sum(s.amount) <> 0 LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION 'ledger: journal entry % does not undo entry % that it reverses (account % is left at %)',
                p_entry, original, mismatch.account_id, mismatch.net
                USING ERRCODE = 'check_violation';
        END IF;
    END IF;
END
$$;

CREATE FUNCTION ledger_entry_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ledger_check_entry(NEW.id);
    RETURN NULL;
END
$$;

CREATE FUNCTION ledger_posting_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM ledger_check_entry(NEW.entry_id);
    RETURN NULL;
END
$$;

-- The chain head, read under the chain lock. The lock serializes every poster until its
-- transaction ends; without it two concurrent posters would read the same previous hash and
-- fork the chain (UNIQUE (sequence) would then refuse the second insert, failing it instead of
-- queueing it). The SELECT runs after the lock is granted and, in READ COMMITTED, with a new
-- snapshot, so it sees the entry the previous holder committed. The key, 119182731994482, is
-- "ledger" read as six ASCII bytes; nothing else may use it.
CREATE FUNCTION ledger_chain_head(OUT head_sequence bigint, OUT head_hash varchar)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(119182731994482);
    SELECT e.sequence, e.hash INTO head_sequence, head_hash
    FROM ledger_journalentry e ORDER BY e.sequence DESC LIMIT 1;
END
$$;

CREATE TRIGGER ledger_entry_append_only BEFORE UPDATE OR DELETE ON ledger_journalentry
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_posting_append_only BEFORE UPDATE OR DELETE ON ledger_posting
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();
CREATE TRIGGER ledger_account_append_only BEFORE UPDATE OR DELETE ON ledger_account
    FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();

CREATE TRIGGER ledger_entry_no_truncate BEFORE TRUNCATE ON ledger_journalentry
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_truncate();
CREATE TRIGGER ledger_posting_no_truncate BEFORE TRUNCATE ON ledger_posting
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_truncate();
CREATE TRIGGER ledger_account_no_truncate BEFORE TRUNCATE ON ledger_account
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_truncate();

CREATE TRIGGER ledger_entry_chain_link BEFORE INSERT ON ledger_journalentry
    FOR EACH ROW EXECUTE FUNCTION ledger_entry_before_insert();
CREATE TRIGGER ledger_posting_rules BEFORE INSERT ON ledger_posting
    FOR EACH ROW EXECUTE FUNCTION ledger_posting_before_insert();

CREATE CONSTRAINT TRIGGER ledger_entry_balanced AFTER INSERT ON ledger_journalentry
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_entry_check();
CREATE CONSTRAINT TRIGGER ledger_posting_balanced AFTER INSERT ON ledger_posting
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION ledger_posting_check();
"""

BACKWARD = """
DROP TRIGGER ledger_posting_balanced ON ledger_posting;
DROP TRIGGER ledger_entry_balanced ON ledger_journalentry;
DROP TRIGGER ledger_posting_rules ON ledger_posting;
DROP TRIGGER ledger_entry_chain_link ON ledger_journalentry;
DROP TRIGGER ledger_account_no_truncate ON ledger_account;
DROP TRIGGER ledger_posting_no_truncate ON ledger_posting;
DROP TRIGGER ledger_entry_no_truncate ON ledger_journalentry;
DROP TRIGGER ledger_account_append_only ON ledger_account;
DROP TRIGGER ledger_posting_append_only ON ledger_posting;
DROP TRIGGER ledger_entry_append_only ON ledger_journalentry;
DROP FUNCTION ledger_chain_head();
DROP FUNCTION ledger_posting_check();
DROP FUNCTION ledger_entry_check();
DROP FUNCTION ledger_check_entry(bigint);
DROP FUNCTION ledger_posting_before_insert();
DROP FUNCTION ledger_entry_before_insert();
DROP FUNCTION ledger_refuse_truncate();
DROP FUNCTION ledger_refuse_change();
ALTER TABLE ledger_journalentry DROP COLUMN xact_id;
"""


class Migration(migrations.Migration):
    dependencies = [("ledger", "0001_initial")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
