"""
PostgreSQL only: both send functions loaded again from inbox/store/sql/, now with ``SET jit = off``.
Their plans' estimated costs (the unread count of each recipient, estimated from the table's whole
unread rows) passed PostgreSQL's JIT thresholds once one inbox was large, and each call then paid
90-130 ms of LLVM compilation for a run of a few milliseconds (bench/JOURNAL.md, finding 72).
``CREATE OR REPLACE`` with the same signatures; going back removes the SET clause again.
"""

from importlib import import_module

from django.db import migrations

functions = import_module("inbox.migrations.0002_squashed_0006_notification_insert_functions")
create_functions = functions.create_functions
# The same two signatures as 0002 drops.
RESET = tuple(drop.replace("DROP FUNCTION IF EXISTS", "ALTER FUNCTION", 1) + " RESET jit" for drop in functions.DROP)

def reset_jit(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for statement in RESET:
        schema_editor.execute(statement)


class Migration(migrations.Migration):

    dependencies = [
        ("inbox", "0016_retention"),
    ]

    operations = [migrations.RunPython(create_functions, reset_jit, elidable=False)]
