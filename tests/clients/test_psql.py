"""PostgreSQL 18's psql through SieveDB: output formats, meta-commands, scripts and errors."""

from __future__ import annotations

import re


def test_select_one_output(psql):
    result = psql("-c", "select 1")
    assert result.returncode == 0, result.stderr
    assert result.stdout == " ?column? \n----------\n        1\n(1 row)\n\n"
    assert result.stderr == ""


def test_unaligned_tuples_only(psql):
    result = psql("-At", "-c", "select 40 + 2, 'héllo'::text, null::int is null")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "42|héllo|t\n"


def test_server_version_is_the_backends(psql):
    result = psql("-At", "-c", "show server_version_num")
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) // 10000 == 18
    # psql prints no "server major version" mismatch warning when ParameterStatus is the real one
    assert "WARNING" not in result.stderr


def test_describe_tables_and_columns(psql, sql, unique_name):
    table = unique_name("psql_items")
    sql(
        f"create table {table} (id integer primary key, name text not null, price numeric(10,2), "
        "created timestamptz default now(), tags varchar(20)[])"
    )
    try:
        listing = psql("-c", r"\dt")
        assert listing.returncode == 0, listing.stderr
        assert "List of tables" in listing.stdout
        row = next(line for line in listing.stdout.splitlines() if table in line)
        assert [c.strip() for c in row.split("|")] == ["public", table, "table", "postgres"]

        described = psql("-c", rf"\d {table}")
        assert described.returncode == 0, described.stderr
        out = described.stdout
        assert f'Table "public.{table}"' in out
        columns = {}
        for line in out.splitlines():
            cells = [c.strip() for c in line.split("|")]
            if len(cells) == 5 and cells[0] not in ("Column", ""):
                columns[cells[0]] = (cells[1], cells[3])
        assert columns == {
            "id": ("integer", "not null"),
            "name": ("text", "not null"),
            "price": ("numeric(10,2)", ""),
            "created": ("timestamp with time zone", ""),
            "tags": ("character varying(20)[]", ""),
        }
        assert re.search(rf'"{table}_pkey" PRIMARY KEY, btree \(id\)', out)
    finally:
        sql(f"drop table {table}")


def test_list_databases(psql):
    result = psql("-c", r"\l")
    assert result.returncode == 0, result.stderr
    assert "List of databases" in result.stdout
    names = [line.split("|")[0].strip() for line in result.stdout.splitlines() if "|" in line]
    assert "postgres" in names
    assert "template1" in names


def test_multi_statement_command(psql):
    result = psql("-c", "select 1 as a; select 2 as b")
    assert result.returncode == 0, result.stderr
    assert result.stdout == " a \n---\n 1\n(1 row)\n\n b \n---\n 2\n(1 row)\n\n"


def test_empty_query(psql):
    result = psql("-At", "-c", ";", "-c", "select 'after empty'")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "after empty\n"


def test_on_error_stop_script(psql, sql, unique_name, tmp_path):
    table = unique_name("psql_script")
    script = tmp_path / "script.sql"
    script.write_text(
        "\\set VERBOSITY verbose\n"
        f"create table {table} (n int);\n"
        f"insert into {table} values (1);\n"
        f"insert into {table} values (2);\n"
        "select 1 / 0;\n"
        f"insert into {table} values (3);\n"
        f"create table {table}_never (n int);\n"
    )
    try:
        result = psql("-v", "ON_ERROR_STOP=1", "-f", str(script))
        assert result.returncode == 3, (result.stdout, result.stderr)
        assert re.search(r"ERROR:  22012: division by zero", result.stderr), result.stderr
        assert re.search(r"LOCATION:  \w+, \w+\.c:\d+", result.stderr), result.stderr
        assert "script.sql:5:" in result.stderr  # psql names the failing line
        assert sql(f"select array_agg(n order by n) from {table}") == [([1, 2],)]
        assert sql("select to_regclass(%s)", (f"{table}_never",)) == [(None,)]
    finally:
        sql(f"drop table if exists {table}")
        sql(f"drop table if exists {table}_never")


def test_error_then_next_statement_works(psql):
    script = (
        "select 1 / 0;\n"
        "select 'still alive' as status;\n"
        "begin;\n"
        "select no_such_column from pg_class;\n"
        "select 1;\n"  # fails: the transaction is aborted
        "rollback;\n"
        "select 40 + 2 as answer;\n"
    )
    result = psql("-At", input=script)
    assert result.returncode == 0, result.stderr  # without ON_ERROR_STOP psql carries on
    assert result.stdout.splitlines() == ["still alive", "BEGIN", "ROLLBACK", "42"]
    errors = [line for line in result.stderr.splitlines() if "ERROR:" in line]
    assert len(errors) == 3, result.stderr
    assert "division by zero" in errors[0]
    assert 'column "no_such_column" does not exist' in errors[1]
    assert "current transaction is aborted" in errors[2]


def test_extended_protocol_from_psql(psql):
    # \bind sends Parse/Bind/Execute with parameters, \parse + \bind_named a named statement.
    script = (
        "select $1::int * 2 as doubled, $2::text as label \\bind 21 'x' \\g\n"
        "select $1::int + 1 \\parse stmt1\n"
        "\\bind_named stmt1 41 \\g\n"
        "\\bind_named stmt1 99 \\g\n"
        "select statement from pg_prepared_statements where name = 'stmt1';\n"
        "\\close_prepared stmt1\n"
        "select count(*) from pg_prepared_statements where name = 'stmt1';\n"
    )
    result = psql("-At", input=script)
    assert result.returncode == 0, result.stderr
    # (psql prints an empty line for \parse and \close_prepared, as it does against Postgres)
    lines = [line for line in result.stdout.splitlines() if line]
    assert lines == ["42|x", "42", "100", "select $1::int + 1 ", "0"]


def test_conninfo_and_protocol_3_2(psql, sieve_server):
    result = psql("-At", "-d", "dbname=postgres max_protocol_version=3.2", "-c", r"\conninfo")
    assert result.returncode == 0, result.stderr
    info = dict(line.split("|", 1) for line in result.stdout.splitlines())
    assert info["Protocol Version"] == "3.2"
    assert info["Server Port"] == str(sieve_server.port)
    assert info["Host"] == sieve_server.host
    assert info["Database"] == "postgres"
