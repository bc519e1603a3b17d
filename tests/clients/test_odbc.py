"""psqlODBC (unicode driver) via pyodbc through SieveDB."""

from __future__ import annotations

import datetime as dt
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

pyodbc = pytest.importorskip("pyodbc", reason="pyodbc is not installed")

DEFAULT_DRIVER = Path("/usr/lib/x86_64-linux-gnu/odbc/psqlodbcw.so")


def find_driver() -> Path | None:
    if DEFAULT_DRIVER.exists():
        return DEFAULT_DRIVER
    try:  # ask unixODBC where "PostgreSQL Unicode" lives
        out = subprocess.run(
            ["odbcinst", "-q", "-d", "-n", "PostgreSQL Unicode"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "Driver" and Path(value.strip()).exists():
            return Path(value.strip())
    return None


@pytest.fixture()
def odbc(sieve_server):
    driver = find_driver()
    if driver is None:
        pytest.skip("psqlODBC unicode driver (psqlodbcw.so, package odbc-postgresql) not found")
    conn = pyodbc.connect(
        f"DRIVER={driver};Server={sieve_server.host};Port={sieve_server.port};"
        "Database=postgres;Uid=postgres;Pwd=;",
        timeout=15,
        autocommit=True,
    )
    yield conn
    conn.close()


def test_parameterised_query(odbc):
    cur = odbc.cursor()
    cur.execute("SELECT ?::int + 1, ?::text", 41, "héllo ☃")
    assert tuple(cur.fetchone()) == (42, "héllo ☃")
    assert cur.fetchone() is None
    assert [d[0] for d in cur.description] == ["?column?", "text"]
    for i in range(5):  # the same statement again and again
        assert cur.execute("SELECT ?::int * 3", i).fetchval() == 3 * i
    name = odbc.getinfo(pyodbc.SQL_DBMS_NAME)
    version = odbc.getinfo(pyodbc.SQL_DBMS_VER)
    assert name == "PostgreSQL"
    assert version.startswith("18.")


def test_table_round_trip(odbc, unique_name):
    table = unique_name("odbc_rt")
    cur = odbc.cursor()
    cur.execute(
        f"create table {table} (id int primary key, name varchar(50), amount numeric(12,3), "
        "day date, at timestamp, flag boolean, data bytea)"
    )
    try:
        rows = [
            (
                1,
                "one",
                Decimal("1.500"),
                dt.date(2024, 1, 31),
                dt.datetime(2024, 1, 31, 8, 0, 1),
                True,
                b"\x00\x01",
            ),
            (
                2,
                "twö",
                Decimal("-2.250"),
                dt.date(1999, 12, 31),
                dt.datetime(1999, 12, 31, 23, 59, 59),
                False,
                b"",
            ),
            (3, None, None, None, None, None, None),
        ]
        cur.executemany(f"insert into {table} values (?, ?, ?, ?, ?, ?, ?)", rows)
        back = [tuple(r) for r in cur.execute(f"select * from {table} order by id").fetchall()]
        # psqlODBC's default BoolsAsChar=1 reports booleans as the characters '1' / '0'
        bool_as_char = {True: "1", False: "0", None: None}
        assert back == [(*row[:5], bool_as_char[row[5]], row[6]) for row in rows]
        assert cur.execute(f"select count(*) from {table} where flag").fetchval() == 1

        assert cur.execute(f"update {table} set name = ? where id >= ?", "many", 2).rowcount == 2
        assert cur.execute(f"delete from {table} where id = ?", 3).rowcount == 1
        assert [tuple(r) for r in cur.execute(f"select id, name from {table} order by id")] == [
            (1, "one"),
            (2, "many"),
        ]

        # a transaction rolled back through the driver
        odbc.autocommit = False
        cur.execute(f"insert into {table} (id, name) values (?, ?)", 10, "rolled back")
        odbc.rollback()
        odbc.autocommit = True
        assert cur.execute(f"select count(*) from {table}").fetchval() == 2

        # an error, then the connection still works
        with pytest.raises(pyodbc.Error) as caught:
            cur.execute("select 1 / 0")
        assert "division by zero" in str(caught.value)
        assert cur.execute("select ?::text", "still here").fetchval() == "still here"

        # catalog functions (SQLTables / SQLColumns)
        tables = [r.table_name for r in cur.tables(table=table, tableType="TABLE")]
        assert tables == [table]
        columns = [(c.column_name, c.type_name) for c in cur.columns(table=table)]
        assert columns == [
            ("id", "int4"),
            ("name", "varchar"),
            ("amount", "numeric"),
            ("day", "date"),
            ("at", "timestamp"),
            ("flag", "bool"),
            ("data", "bytea"),
        ]
    finally:
        odbc.autocommit = True
        cur.execute(f"drop table {table}")
