# The retention purge's expiry sweep: a partial index of the rows that expire (issue 21, retention).

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("inbox", "0015_journal_sequence"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="notification",
            index=models.Index(
                condition=models.Q(("expires_at__isnull", False)), fields=["expires_at"], name="inbox_expiry"
            ),
        ),
    ]
