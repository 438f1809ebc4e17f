"""
The send's SQL functions have one source each (inbox/store/sql/), which the migrations load, and the
migrated database holds exactly what it defines, SET clauses included.
"""

import re
from pathlib import Path

import pytest
from django.db import connection, transaction

import inbox
from inbox.store import postgres

@pytest.mark.parametrize("name", sorted(postgres.SQL_FILES))
def test_each_file_defines_its_function_and_raises_the_stores_sqlstate(name):
    text = postgres.SQL_FILES[name].read_text()
    assert re.findall(r"CREATE OR REPLACE FUNCTION (\w+)\(", text) == [name]
    assert f"USING ERRCODE = '{postgres.INACTIVE_RECIPIENTS_SQLSTATE}'" in text


def test_the_inactive_recipients_sqlstate_is_written_once_in_python():
    package = Path(inbox.__file__).resolve().parent
    holders = [p.relative_to(package).as_posix() for p in package.rglob("*.py") if postgres.INACTIVE_RECIPIENTS_SQLSTATE in p.read_text()]
    assert holders == ["store/postgres.py"]


def function_definition(cursor, regproc: str) -> tuple[str, str]:
    cursor.execute(
        "SELECT pg_get_functiondef(p.oid), n.nspname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
        "WHERE p.oid = %s::regproc",
        [regproc],
    )
    return cursor.fetchone()


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite has no SQL functions: its path is the ORM (inbox/store/sqlite.py)")
@pytest.mark.parametrize("name", sorted(postgres.SQL_FILES))
def test_the_migrated_databases_function_is_exactly_what_its_canonical_file_defines(db, name):
    # The file's function is created beside the migrated one, in a schema of its own that is
    # rolled back, and PostgreSQL's own rendering of the two is compared: arguments, result,
    # language, SET clauses and body.
    with connection.cursor() as cursor:
        migrated, schema = function_definition(cursor, name)
        with transaction.atomic():
            cursor.execute("CREATE SCHEMA inbox_sql_check")
            cursor.execute("SET LOCAL search_path TO inbox_sql_check")
            cursor.execute(postgres.function_sql(name), None)
            from_file, _ = function_definition(cursor, f"inbox_sql_check.{name}")
            transaction.set_rollback(True)
    assert f"FUNCTION inbox_sql_check.{name}(" in from_file
    assert from_file.replace(f"FUNCTION inbox_sql_check.{name}(", f"FUNCTION {schema}.{name}(", 1) == migrated
