"""
``python manage.py inbox_worker``: runs the fallbacks' durable schedule (Web Push, e-mail).

A thin name over the task library's own worker, so deployments and ``make run`` keep one command
whatever library is underneath: today django-tasks-db's ``db_worker`` (every option of it works
here: ``--interval``, ``--max-tasks``, ``--batch``, ``--worker-id``, ``--queue-name``). Run one or
more per deployment beside the servers (``make run`` and the Docker image start one beside daphne
through scripts/serve.py; docs/fallbacks.md); SIGTERM lets the task in hand finish. Unlike ``db_worker``
it does not reload on code changes unless asked (``--reload``): a worker under a supervisor must be
the process the supervisor signals.
"""

from django_tasks_db.management.commands.db_worker import Command as LibraryWorker

from inbox.fallback.scheduler import check_backend


class Command(LibraryWorker):
    help = "Run the worker of Inbox's fallbacks (Web Push and e-mail): django-tasks-db's database worker."

    def add_arguments(self, parser) -> None:
        super().add_arguments(parser)
        parser.set_defaults(reload=False)

    def handle(self, *args, **options) -> None:
        check_backend()
        # The periodic retention purge: exactly one run waiting, whatever number of workers start.
        from inbox.services import retention

        retention.ensure_scheduled()
        super().handle(*args, **options)
