# Preferences (time zone, quiet hours, per-category channels and mutes) and the fallbacks' record (issue 20).
# Written against 0008; it follows 0009 (present in the tree when written) so the chain has one leaf.

import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('inbox', '0009_idempotency_key_without_sender'),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.CreateModel(
            name='DeliveryProfile',
            fields=[
                ('user', models.OneToOneField(on_delete=django.db.models.deletion.CASCADE, primary_key=True, related_name='inbox_delivery_profile', serialize=False, to=settings.AUTH_USER_MODEL)),
                ('time_zone', models.CharField(default='UTC', max_length=64)),
                ('quiet_start', models.TimeField(blank=True, null=True)),
                ('quiet_end', models.TimeField(blank=True, null=True)),
                ('updated_at', models.DateTimeField(default=django.utils.timezone.now)),
            ],
            options={
                'verbose_name': 'delivery profile',
            },
        ),
        migrations.CreateModel(
            name='CategoryPreference',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('category', models.SlugField()),
                ('in_app', models.BooleanField(default=True)),
                ('web_push', models.BooleanField(default=True)),
                ('email', models.BooleanField(default=True)),
                ('muted_until', models.DateTimeField(blank=True, null=True)),
                ('updated_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('user', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='inbox_category_preferences', to=settings.AUTH_USER_MODEL)),
            ],
            options={
                'verbose_name': 'category preference',
                'constraints': [models.UniqueConstraint(fields=('user', 'category'), name='inbox_category_preference_user_category')],
            },
        ),
        migrations.CreateModel(
            name='FallbackDelivery',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('channel', models.CharField(choices=[('in_app', 'in-app'), ('web_push', 'Web Push'), ('email', 'e-mail')], max_length=16)),
                ('status', models.CharField(choices=[('sending', 'Sending'), ('sent', 'Sent'), ('skipped', 'Skipped'), ('failed', 'Failed')], default='sending', max_length=16)),
                ('attempts', models.PositiveSmallIntegerField(default=1)),
                ('reason', models.CharField(blank=True, default='', max_length=64)),
                ('created_at', models.DateTimeField(default=django.utils.timezone.now)),
                ('sent_at', models.DateTimeField(blank=True, null=True)),
                ('notification', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='+', to='inbox.notification')),
            ],
            options={
                'verbose_name': 'fallback delivery',
                'verbose_name_plural': 'fallback deliveries',
                'constraints': [models.UniqueConstraint(fields=('notification', 'channel'), name='inbox_fallback_notification_channel')],
            },
        ),
    ]
