# Issue 21's feed needs no change to the PostgreSQL insert functions: a send with a key, a group or
# actions is written by inbox/store/keyed.py (the ORM, under the same advisory locks), and the
# functions' rows take the columns' database defaults (migration 0013). Kept so the graph stays as is.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("inbox", "0013_notification_feed"),
    ]

    operations = []
