"""Many entries in one round trip: ledger_post_entries, the batch form of ledger_post_entry.

A poster holds the chain lock from the head read until its commit is durable, so every round
trip under the lock is paid by every other poster in turn. journal_post_many (and journal_post,
a batch of one) sends a whole batch in one call: the idempotency pre-check outside the lock,
then the lock once, the keys again and the head, then for each entry in order created_at and
the hash, then one INSERT of the entries and one of their postings (a statement per entry cost
~30 us more per entry, all of it under the lock).

Each entry is hashed over exactly the bytes ledger_post_entry (migration 0003) hashes and
`ledger.chain.entry_hash` recomputes (verify_ledger):

    sha256( prev_hash || '\n' || sequence || '\n' || created_at (UTC, microseconds) || '\n' || content )

with `content` the canonical JSON built in Python from the same values passed as the other
arguments. created_at is the clock read under the lock, but never earlier than the head's own
created_at: along the chain it does not decrease, even if the wall clock steps back.

ledger_post_entry stays for a single entry (journal_post): for one entry it is ~130 us
faster than this function (fewer statements), and every poster waits for that time too.
"""

from django.db import migrations

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
    new_ids bigint[];
    head_sequence bigint;
    head_hash varchar;
    head_at timestamptz;
    stamp timestamptz;
    i integer;
    j integer := 0;
BEGIN
    IF n IS NULL OR n = 0 THEN
        RETURN;
    END IF;
    -- A replay (the common retry) returns the existing entries without taking the lock.
    SELECT array_agg(e.id ORDER BY k.i) INTO ids
    FROM unnest(p_keys) WITH ORDINALITY AS k(key, i)
    LEFT JOIN ledger_journalentry e ON e.idempotency_key = k.key;
    IF array_position(ids, NULL) IS NULL THEN
        RETURN QUERY SELECT ids[k.i], false, NULL::bigint, NULL::timestamptz, NULL::varchar,
            NULL::varchar FROM generate_subscripts(p_keys, 1) AS k(i) ORDER BY k.i;
        RETURN;
    END IF;
    -- The chain lock (see ledger_chain_head): two posters must not read the same head and fork
    -- the chain. Taken once for the batch; each statement below runs with a snapshot taken
    -- after it was granted (READ COMMITTED), so it sees what the previous holder committed.
    PERFORM pg_advisory_xact_lock(119182731994482);
    -- The keys again, under the lock: a poster of one of them that committed while we waited
    -- (every poster inserts under this lock) is seen now, and its entry is returned as a
    -- replay. (A client inserting without the lock meets the unique constraint on the key.)
    SELECT array_agg(e.id ORDER BY k.i) INTO ids
    FROM unnest(p_keys) WITH ORDINALITY AS k(key, i)
    LEFT JOIN ledger_journalentry e ON e.idempotency_key = k.key;
    SELECT e.sequence, e.hash, e.created_at INTO head_sequence, head_hash, head_at
    FROM ledger_journalentry e ORDER BY e.sequence DESC LIMIT 1;
    IF NOT FOUND THEN
        head_sequence := 0;
        head_hash := repeat('0', 64);
        head_at := '-infinity';
    END IF;
    -- Link the new entries in the order given, then insert them in one statement.
    FOR i IN 1 .. n LOOP
        CONTINUE WHEN ids[i] IS NOT NULL;
        -- Read under the lock, and never before the head: created_at does not decrease.
        stamp := greatest(date_trunc('microseconds', clock_timestamp()), head_at);
        made[i] := true;
        seqs[i] := head_sequence + 1;
        times[i] := stamp;
        prevs[i] := head_hash;
        hashes[i] := encode(sha256(convert_to(
            head_hash || E'\n' || seqs[i]::text || E'\n'
            || to_char(stamp AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
            || E'\n' || p_contents[i], 'UTF8')), 'hex');
        head_sequence := seqs[i];
        head_hash := hashes[i];
        head_at := stamp;
    END LOOP;
    -- No ON CONFLICT: under the lock no other poster can insert a key checked above, and a key
    -- twice in one batch is an error (the unique constraint on the key says which). A second
    -- reversal of an entry raises on UNIQUE (reverses_id).
    WITH inserted AS (
        INSERT INTO ledger_journalentry AS e (sequence, idempotency_key, memo, reference_type,
            reference_id, reverses_id, created_at, prev_hash, hash)
        SELECT seqs[k.i], p_keys[k.i], p_memos[k.i], p_reference_types[k.i],
            p_reference_ids[k.i], p_reverses[k.i], times[k.i], prevs[k.i], hashes[k.i]
        FROM generate_subscripts(p_keys, 1) AS k(i)
        WHERE made[k.i]
        ORDER BY k.i
        RETURNING e.id, e.sequence
    )
    SELECT array_agg(inserted.id ORDER BY inserted.sequence) INTO new_ids FROM inserted;
    -- Sequences ascend in batch order, so the new ids in sequence order are in batch order.
    FOR i IN 1 .. n LOOP
        CONTINUE WHEN NOT made[i];
        j := j + 1;
        ids[i] := new_ids[j];
    END LOOP;
    -- Every posting of the new entries in one statement (p_posting_entry: the 1-based position
    -- of each posting's entry in the batch).
    INSERT INTO ledger_posting (entry_id, account_id, amount, currency)
    SELECT ids[t.e], t.a, t.m, t.c
    FROM unnest(p_posting_entry, p_accounts, p_amounts, p_currencies) AS t(e, a, m, c)
    WHERE made[t.e];
    RETURN QUERY
    SELECT ids[k.i], made[k.i], seqs[k.i], times[k.i], prevs[k.i], hashes[k.i]
    FROM generate_subscripts(p_keys, 1) AS k(i)
    ORDER BY k.i;
END
$$;

"""

BACKWARD = """
DROP FUNCTION ledger_post_entries(varchar[], text[], varchar[], varchar[], bigint[], text[],
    integer[], bigint[], bigint[], varchar[]);
"""


class Migration(migrations.Migration):
    dependencies = [("ledger", "0003_post_entry_function")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
