"""Every primary key of a usage table includes host_id, so the usage tables can be distributed
by host on Citus as they are (docs/scaling.md; tests/usage/test_distributable_schema.py keeps
it so). The two keys that did not:

- `usage_record`: (id, occurred_at) becomes (id, occurred_at, host_id). id still leads, so a
  lookup by id uses the key as before; ids come from one sequence, so they stay unique anyway.
- `usage_periodclose`: (id) becomes (id, host_id); its (host, licensor, period) unique
  constraint already included host_id.
- `usage_rejection`: (id) becomes (id, host_id).

Django still sees `id` as each model's primary key (models.py says why for usage_record). No
foreign key references any of them. On a large `usage_record` this rebuilds the primary-key
index of every partition under an ACCESS EXCLUSIVE lock: run it in a maintenance window.
"""

from django.db import migrations

FORWARD = """
ALTER TABLE usage_record DROP CONSTRAINT usage_record_pkey;
ALTER TABLE usage_record ADD CONSTRAINT usage_record_pkey PRIMARY KEY (id, occurred_at, host_id);
ALTER TABLE usage_periodclose DROP CONSTRAINT usage_periodclose_pkey;
ALTER TABLE usage_periodclose ADD CONSTRAINT usage_periodclose_pkey PRIMARY KEY (id, host_id);
ALTER TABLE usage_rejection DROP CONSTRAINT usage_rejection_pkey;
ALTER TABLE usage_rejection ADD CONSTRAINT usage_rejection_pkey PRIMARY KEY (id, host_id);
"""

BACKWARD = """
ALTER TABLE usage_rejection DROP CONSTRAINT usage_rejection_pkey;
ALTER TABLE usage_rejection ADD CONSTRAINT usage_rejection_pkey PRIMARY KEY (id);
ALTER TABLE usage_periodclose DROP CONSTRAINT usage_periodclose_pkey;
ALTER TABLE usage_periodclose ADD CONSTRAINT usage_periodclose_pkey PRIMARY KEY (id);
ALTER TABLE usage_record DROP CONSTRAINT usage_record_pkey;
ALTER TABLE usage_record ADD CONSTRAINT usage_record_pkey PRIMARY KEY (id, occurred_at);
"""


class Migration(migrations.Migration):
    dependencies = [("usage", "0002_events_rejections")]

    operations = [migrations.RunSQL(FORWARD, BACKWARD)]
