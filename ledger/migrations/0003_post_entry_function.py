"""One round trip per posted entry: the chain lock is held from the head read to the commit, so
every round trip inside it is paid by every poster in turn. ledger_post_entry does the whole
insert server-side (the idempotency pre-check outside the lock, then lock, head, created_at,
hash, entry, postings) and returns what journal_post needs.

The hash is computed here, in SQL, over exactly the bytes `ledger.chain.entry_hash` hashes in
Python, which verify_ledger uses to recompute it:

    sha256( prev_hash || '\n' || sequence || '\n' || created_at (UTC, microseconds) || '\n' || content )

where `content` is the canonical JSON that journal_post builds in Python (ASCII only) from the
same values it passes as the other arguments.
"""

from django.db import migrations

FORWARD = r"""
CREATE FUNCTION ledger_post_entry(
    p_key varchar, p_memo text, p_reference_type varchar, p_reference_id varchar,
    p_reverses bigint, p_content text,
    p_accounts bigint[], p_amounts bigint[], p_currencies varchar[],
    OUT entry_id bigint, OUT created boolean, OUT entry_sequence bigint,
    OUT entry_created_at timestamptz, OUT entry_prev_hash varchar, OUT entry_hash varchar
) LANGUAGE plpgsql AS $$
BEGIN
    -- A replay (the common retry) returns the existing entry without taking the lock.
    SELECT e.id INTO entry_id FROM ledger_journalentry e WHERE e.idempotency_key = p_key;
    IF FOUND THEN
        created := false;
        RETURN;
    END IF;
    -- The chain lock (see ledger_chain_head): two posters must not read the same head and fork
    -- the chain. Each statement below runs with a snapshot taken after the lock was granted.
    PERFORM pg_advisory_xact_lock(119182731994482);
    SELECT e.sequence + 1, e.hash INTO entry_sequence, entry_prev_hash
    FROM ledger_journalentry e ORDER BY e.sequence DESC LIMIT 1;
    IF NOT FOUND THEN
        entry_sequence := 1;
        entry_prev_hash := repeat('0', 64);
    END IF;
    -- Read under the lock, so created_at never decreases along the chain.
    entry_created_at := date_trunc('microseconds', clock_timestamp());
    entry_hash := encode(sha256(convert_to(
        entry_prev_hash || E'\n' || entry_sequence::text || E'\n'
        || to_char(entry_created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
        || E'\n' || p_content, 'UTF8')), 'hex');
    -- ON CONFLICT on the key only: a concurrent poster of the same key that committed first
    -- wins and its entry is returned; any other unique violation (a second reversal) raises.
    INSERT INTO ledger_journalentry (sequence, idempotency_key, memo, reference_type,
        reference_id, reverses_id, created_at, prev_hash, hash)
    VALUES (entry_sequence, p_key, p_memo, p_reference_type, p_reference_id, p_reverses,
        entry_created_at, entry_prev_hash, entry_hash)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING id INTO entry_id;
    IF entry_id IS NULL THEN
        SELECT e.id INTO entry_id FROM ledger_journalentry e WHERE e.idempotency_key = p_key;
        created := false;
        entry_sequence := NULL;
        entry_created_at := NULL;
        entry_prev_hash := NULL;
        entry_hash := NULL;
        RETURN;
    END IF;
    INSERT INTO ledger_posting (entry_id, account_id, amount, currency)
    SELECT entry_id, t.a, t.m, t.c FROM unnest(p_accounts, p_amounts, p_currencies) AS t(a, m, c);
    created := true;
END
$$;
"""

BACKWARD = """
DROP FUNCTION ledger_post_entry(varchar, text, varchar, varchar, bigint, text, bigint[],
    bigint[], varchar[]);
"""


class Migration(migrations.Migration):
    dependencies = [("ledger", "0002_enforcement")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
