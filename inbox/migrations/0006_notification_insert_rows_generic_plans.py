"""
PostgreSQL only: ``inbox_notification_insert_rows()`` runs its statements on generic plans.

PL/pgSQL plans each statement of a function once per connection, and at every call PostgreSQL
chooses between that generic plan and a custom plan made for the call's values. With arrays as
parameters the generic plan's estimates (ten elements an array) did not look cheaper than the custom
plans, so every call of this function was planned anew (its calls took as long as with custom
plans forced: 0.774 against 0.694-0.739 ms for a batch of three). Measured with psycopg on the bench cluster
(two runs each, milliseconds a call, commit included), per-call plans against generic ones: a batch
of one send 0.664 / 0.682 against 0.432 / 0.447, three sends 0.787 / 0.790 against 0.522 / 0.530,
16 sends 1.333 / 1.440 against 1.019 / 1.153; 64 and 512 rows the same either way (bench/README.md,
finding 56). The function only writes group commit's batches (at most ``INBOX_GROUP_COMMIT_MAX``
sends of at most 16 recipients each), so plans for large arrays are never needed.
``inbox_notification_insert()`` keeps choosing per call: it also writes bulk sends, which were
slower on generic plans (1,000 recipients, three pairs: 61.7 / 110.8 / 155.6 against 42.8 / 79.6 /
126.8 ms, the table growing from pair to pair).

A later ``CREATE OR REPLACE FUNCTION inbox_notification_insert_rows`` replaces this setting with the
SET clauses of its own definition: repeat it there (tests/inbox/test_services.py checks the plans).
"""

from django.db import migrations

SIGNATURE = (
    "inbox_notification_insert_rows(bigint[], integer, integer[], bigint[], text[], text[], text[], jsonb[], "
    "text[], timestamptz[], timestamptz[], timestamptz, text)"
)


def use_generic_plans(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER FUNCTION {SIGNATURE} SET plan_cache_mode = force_generic_plan")


def choose_plans_per_call(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"ALTER FUNCTION {SIGNATURE} RESET plan_cache_mode")


class Migration(migrations.Migration):
    dependencies = [("inbox", "0005_notification_insert_rows_function")]

    operations = [migrations.RunPython(use_generic_plans, choose_plans_per_call, elidable=False)]
