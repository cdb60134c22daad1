"""usage_record's primary key becomes (host_id, occurred_at, id), and the index of those columns
that it duplicated goes: one b-tree fewer written with every accepted record, and one copy
fewer of those columns on disk (~40 bytes a record).

The old key (id, occurred_at, host_id) and `usage_record_host_time` (host_id, occurred_at, id)
held the same columns. Every read of a host's records (GET /usage, the summary, a line's
records, corrections, the verification kit) goes by host and time, so the second order is the
one kept. Nothing looks a record up by id at the rate of those reads: the admin's page of one
record does, and a BRIN index on `id` serves it. Ids are appended in order, so each range of
128 pages holds a narrow band of them; an insert only looks at the range map, and a range's
summary is written when VACUUM summarizes it (until then a read scans that range, the newest
pages). The key still includes host_id (docs/scaling.md) and occurred_at (the partition key).

On a large `usage_record` this rebuilds the primary-key index of every partition under an
ACCESS EXCLUSIVE lock: run it in a maintenance window (docs/operations.md, "Processes").
"""

from django.db import migrations

FORWARD = """
ALTER TABLE usage_record DROP CONSTRAINT usage_record_pkey;
DROP INDEX usage_record_host_time;
ALTER TABLE usage_record ADD CONSTRAINT usage_record_pkey PRIMARY KEY (host_id, occurred_at, id);
CREATE INDEX usage_record_id ON usage_record USING brin (id);
"""

BACKWARD = """
DROP INDEX usage_record_id;
ALTER TABLE usage_record DROP CONSTRAINT usage_record_pkey;
ALTER TABLE usage_record ADD CONSTRAINT usage_record_pkey PRIMARY KEY (id, occurred_at, host_id);
CREATE INDEX usage_record_host_time ON usage_record (host_id, occurred_at, id);
"""


class Migration(migrations.Migration):
    dependencies = [("usage", "0006_event_id_bytewise")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
