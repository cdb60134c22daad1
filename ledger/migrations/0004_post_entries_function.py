"""Many entries in one round trip: ledger_post_entries, the batch form of ledger_post_entry.

A poster holds the chain lock from the head read until its commit is durable, so every round
trip under the lock is paid by every other poster in turn. journal_post_many (and journal_post,
a batch of one) sends a whole batch in one call: the idempotency pre-check outside the lock,
then the lock once, then for each entry in order the head, created_at, the hash and the insert,
then every posting of the batch in one INSERT.

Each entry is hashed over exactly the bytes ledger_post_entry (migration 0003) hashes and
`ledger.chain.entry_hash` recomputes (verify_ledger):

    sha256( prev_hash || '\n' || sequence || '\n' || created_at (UTC, microseconds) || '\n' || content )

with `content` the canonical JSON built in Python from the same values passed as the other
arguments. created_at is the clock read under the lock, but never earlier than the head's own
created_at: along the chain it does not decrease, even if the wall clock steps back.

ledger_post_entry is dropped: the services call this function only, so that one SQL text
builds the hash the chain depends on (the reverse migration restores it from 0003).
"""

from importlib import import_module

from django.db import migrations

POST_ENTRY = import_module("ledger.migrations.0003_post_entry_function")

FORWARD = r"""
CREATE FUNCTION ledger_post_entries(
    p_keys varchar[], p_memos text[], p_reference_types varchar[], p_reference_ids varchar[],
    p_reverses bigint[], p_contents text[],
    p_posting_entry integer[], p_accounts bigint[], p_amounts bigint[], p_currencies varchar[]
) RETURNS TABLE (
    entry_id bigint, created boolean, entry_sequence bigint, entry_created_at timestamptz,
    entry_prev_hash varchar, entry_hash varchar
) LANGUAGE plpgsql AS $$
DECLARE
    n integer := cardinality(p_keys);
    ids bigint[];
    made boolean[] := array_fill(false, ARRAY[n]);
    seqs bigint[] := array_fill(NULL::bigint, ARRAY[n]);
    times timestamptz[] := array_fill(NULL::timestamptz, ARRAY[n]);
    prevs varchar[] := array_fill(NULL::varchar, ARRAY[n]);
    hashes varchar[] := array_fill(NULL::varchar, ARRAY[n]);
    head_sequence bigint;
    head_hash varchar;
    head_at timestamptz;
    stamp timestamptz;
    digest varchar;
    new_id bigint;
    i integer;
BEGIN
    IF n IS NULL OR n = 0 THEN
        RETURN;
    END IF;
    -- A replay (the common retry) returns the existing entries without taking the lock.
    SELECT array_agg(e.id ORDER BY k.i) INTO ids
    FROM unnest(p_keys) WITH ORDINALITY AS k(key, i)
    LEFT JOIN ledger_journalentry e ON e.idempotency_key = k.key;
    IF array_position(ids, NULL) IS NOT NULL THEN
        -- The chain lock (see ledger_chain_head): two posters must not read the same head and
        -- fork the chain. Taken once for the batch; every statement below runs with a snapshot
        -- taken after it was granted, so the head is the last committed entry.
        PERFORM pg_advisory_xact_lock(119182731994482);
        SELECT e.sequence, e.hash, e.created_at INTO head_sequence, head_hash, head_at
        FROM ledger_journalentry e ORDER BY e.sequence DESC LIMIT 1;
        IF NOT FOUND THEN
            head_sequence := 0;
            head_hash := repeat('0', 64);
            head_at := '-infinity';
        END IF;
        FOR i IN 1 .. n LOOP
            CONTINUE WHEN ids[i] IS NOT NULL;
            -- Read under the lock, and never before the head: created_at does not decrease.
            stamp := greatest(date_trunc('microseconds', clock_timestamp()), head_at);
            digest := encode(sha256(convert_to(
                head_hash || E'\n' || (head_sequence + 1)::text || E'\n'
                || to_char(stamp AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
                || E'\n' || p_contents[i], 'UTF8')), 'hex');
            -- ON CONFLICT on the key only: a concurrent poster of the same key that committed
            -- before we got the lock wins and its entry is returned (so is an earlier entry of
            -- this batch with the same key); any other unique violation (a second reversal)
            -- raises.
            new_id := NULL;
            INSERT INTO ledger_journalentry AS e (sequence, idempotency_key, memo,
                reference_type, reference_id, reverses_id, created_at, prev_hash, hash)
            VALUES (head_sequence + 1, p_keys[i], p_memos[i], p_reference_types[i],
                p_reference_ids[i], p_reverses[i], stamp, head_hash, digest)
            ON CONFLICT (idempotency_key) DO NOTHING
            RETURNING e.id INTO new_id;
            IF new_id IS NULL THEN
                SELECT e.id INTO new_id FROM ledger_journalentry e
                WHERE e.idempotency_key = p_keys[i];
                ids[i] := new_id;
                CONTINUE;
            END IF;
            ids[i] := new_id;
            made[i] := true;
            seqs[i] := head_sequence + 1;
            times[i] := stamp;
            prevs[i] := head_hash;
            hashes[i] := digest;
            head_sequence := head_sequence + 1;
            head_hash := digest;
            head_at := stamp;
        END LOOP;
        -- Every posting of the entries made here, in one statement (p_posting_entry: the
        -- 1-based position of each posting's entry in the batch).
        INSERT INTO ledger_posting (entry_id, account_id, amount, currency)
        SELECT ids[t.e], t.a, t.m, t.c
        FROM unnest(p_posting_entry, p_accounts, p_amounts, p_currencies) AS t(e, a, m, c)
        WHERE made[t.e];
    END IF;
    RETURN QUERY
    SELECT ids[k.i], made[k.i], seqs[k.i], times[k.i], prevs[k.i], hashes[k.i]
    FROM generate_subscripts(p_keys, 1) AS k(i)
    ORDER BY k.i;
END
$$;

DROP FUNCTION ledger_post_entry(varchar, text, varchar, varchar, bigint, text, bigint[],
    bigint[], varchar[]);
"""

BACKWARD = (
    POST_ENTRY.FORWARD
    + """
DROP FUNCTION ledger_post_entries(varchar[], text[], varchar[], varchar[], bigint[], text[],
    integer[], bigint[], bigint[], varchar[]);
"""
)


class Migration(migrations.Migration):
    dependencies = [("ledger", "0003_post_entry_function")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
