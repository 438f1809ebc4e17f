# Placeholder filled by its owner (issue 21); no operations yet.

from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("inbox", "0013_notification_feed"),
    ]

    operations = []
