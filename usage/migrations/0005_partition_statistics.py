"""Extended statistics (ndistinct, dependencies) on (licensor_id, license_id, model_id) for
`usage_record` and each of its existing partitions (usage/partitions.py creates them with every
new partition). Without them the planner multiplies the distinct counts of these functionally
dependent columns, overestimates a month's groups ~100x and sorts the month to disk instead of
hashing it (docs/performance.md, "Billing"). Creating a statistics object is quick; it is filled
by the next ANALYZE of each table."""

from django.db import migrations


def create_statistics(apps, schema_editor):
    from usage.partitions import statistics_sql

    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'usage_record'::regclass ORDER BY c.relname"
        )
        for table in ["usage_record", *(row[0] for row in cursor.fetchall())]:
            cursor.execute(statistics_sql(table))


def drop_statistics(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT stxname FROM pg_statistic_ext WHERE stxname LIKE 'usage\\_record%%model\\_stats'"
        )
        for (name,) in cursor.fetchall():
            cursor.execute(f"DROP STATISTICS IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("usage", "0004_period_complete")]

    operations = [migrations.RunPython(create_statistics, drop_statistics)]
