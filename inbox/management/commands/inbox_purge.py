"""
``python manage.py inbox_purge [--dry-run] [--batch-size N]``: one retention round now, the one the
task worker runs every ``INBOX["PURGE_EVERY_SECONDS"]`` (inbox/services/retention.py): expired
notifications, notifications past their category's retention, tombstones past the journal's.
Prints what went (or, with ``--dry-run``, what would go) and how long it took.
"""

from django.core.management.base import BaseCommand, CommandError

from inbox.conf import inbox_setting
from inbox.retention_settings import retention_rules
from inbox.services import retention


class Command(BaseCommand):
    help = "Purge expired notifications, those past their retention (INBOX_RETENTION_DAYS) and old journal tombstones, in short batches."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Count what would be purged; change nothing.")
        parser.add_argument("--batch-size", type=int, default=None, help="Rows per transaction (default: INBOX_PURGE_BATCH_SIZE).")

    def handle(self, *args, dry_run: bool, batch_size: int | None, **options) -> None:
        if batch_size is not None and not 1 <= batch_size <= 100_000:
            raise CommandError("--batch-size must be from 1 to 100,000.")
        rules = retention_rules(inbox_setting("RETENTION_DAYS"))
        kept = ", ".join(f"{c}: {'forever' if d is None else f'{d:g} days'}" for c, d in sorted(rules.items())) or "everything forever"
        journal = inbox_setting("JOURNAL_RETENTION_DAYS")
        self.stdout.write(f"Retention: {kept}; journal tombstones: {'forever' if journal is None else f'{journal:g} days'}.")
        report = retention.purge(dry_run=dry_run, batch_size=batch_size)
        figures = report.as_dict()
        verb = "Would purge" if dry_run else "Purged"
        self.stdout.write(
            f"{verb} {figures['expired']} expired and {figures['purged']} past retention notification(s), "
            f"{figures['tombstones']} tombstone(s)" + ("" if dry_run else f"; {figures['floors_raised']} journal floor(s) raised")
            + f", in {figures['seconds']:.2f} s."
        )
        if not dry_run and report.batches:
            self.stdout.write(
                f"{report.batches} batch(es) of up to {batch_size or inbox_setting('PURGE_BATCH_SIZE')} rows: "
                f"median {figures['batch_median_ms']} ms, max {figures['batch_max_ms']} ms per transaction."
            )
