"""
PostgreSQL only: ``inbox_notification_insert()`` plans its statements without sequential scans.

PL/pgSQL keeps a generic plan of each statement of the function for the life of the connection
(until the table is analyzed again). When that plan is made while ``inbox_notification`` is nearly
empty and its statistics say so (a new deployment, a purge followed by VACUUM ANALYZE, a bench
run's fresh database), a sequential scan is the cheapest way to count a recipient's unread rows,
and the connection then scans the whole table for every send as it grows: in bench/ half of the
sends of a directed run did, and pgbench calls of the function took 0.86-0.89 ms of PostgreSQL CPU
instead of 0.41-0.45 (bench/README.md, finding 47). 0003 made the index the cheap plan once there
are rows; this makes it the plan at any size. The function reads the users and the
notifications by their keys and its recipients' indexes only, so nothing in it is better off with
a sequential scan; a bulk send to every user reads the users by their primary key.
"""

from django.db import migrations

SIGNATURE = (
    "inbox_notification_insert(bigint[], integer, integer[], bigint, text, text, text, jsonb, text, "
    "timestamptz, timestamptz)"
)


def forbid_sequential_scans(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER FUNCTION {SIGNATURE} SET enable_seqscan = off")


def allow_sequential_scans(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER FUNCTION {SIGNATURE} RESET enable_seqscan")


class Migration(migrations.Migration):
    dependencies = [("inbox", "0003_notification_insert_counts_per_recipient")]

    operations = [migrations.RunPython(forbid_sequential_scans, allow_sequential_scans, elidable=False)]
