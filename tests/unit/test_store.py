"""The store's parts that need no database: how SQL placeholders are rewritten for psycopg, and which URLs it opens.
Its contract (claims, transactions, the outbox and its relay) is one suite on SQLite and PostgreSQL alike:
tests/integration/test_store.py."""

import pytest

from fleet.runtime.store import open_store, to_pyformat


def test_question_marks_become_psycopg_placeholders_outside_quotes_only():
    sql = "SELECT ? FROM t WHERE a LIKE '50%' AND b = 'who?' AND \"odd?\" = ?"
    assert to_pyformat(sql) == "SELECT %s FROM t WHERE a LIKE '50%%' AND b = 'who?' AND \"odd?\" = %s"


async def test_a_store_url_of_another_kind_is_refused():
    with pytest.raises(ValueError, match="unsupported store URL 'mysql://db'"):
        await open_store("mysql://db")
