"""pgJDBC (Debian's libpostgresql-jdbc-java) through SieveDB: server-side prepares past
prepareThreshold, batches, transactions, errors and DatabaseMetaData."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

JAR = Path("/usr/share/java/postgresql.jar")

PROGRAM = r"""
import java.sql.*;
import java.util.Arrays;
import org.postgresql.PGStatement;

public class SieveJdbc {
    static void out(Object... cells) {
        StringBuilder line = new StringBuilder();
        for (int i = 0; i < cells.length; i++) {
            if (i > 0) line.append('\t');
            line.append(String.valueOf(cells[i]).replace('\t', ' ').replace('\n', ' '));
        }
        System.out.println(line);
    }

    public static void main(String[] args) throws Exception {
        String url = args[0];
        String table = args[1];
        try (Connection c = DriverManager.getConnection(url)) {
            DatabaseMetaData md = c.getMetaData();
            out("PRODUCT", md.getDatabaseProductName(), md.getDatabaseMajorVersion());
            try (Statement s = c.createStatement()) {
                s.execute("create table " + table + " (id serial primary key, name varchar(40) not null, "
                        + "score double precision, created timestamptz default now())");
            }

            String sql = "select ?::int * 2 as doubled, ? || '!' as shout";
            try (PreparedStatement ps = c.prepareStatement(sql)) {
                PGStatement pg = ps.unwrap(PGStatement.class);
                out("THRESHOLD", pg.getPrepareThreshold());
                for (int i = 0; i < 10; i++) {
                    ps.setInt(1, i);
                    ps.setString(2, "v" + i);
                    int value;
                    String text;
                    boolean more;
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        value = rs.getInt(1);
                        text = rs.getString(2);
                        more = rs.next();
                    }
                    long named;
                    try (Statement s = c.createStatement();
                         ResultSet rs = s.executeQuery("select count(*) from pg_prepared_statements "
                             + "where statement like 'select $1::int * 2 as doubled%'")) {
                        rs.next();
                        named = rs.getLong(1);
                    }
                    out("EXEC", i, value, text, more, named, pg.isUseServerPrepare());
                }
                try (Statement s = c.createStatement();
                     ResultSet rs = s.executeQuery(
                         "select name, statement from pg_prepared_statements "
                         + "where not from_sql order by name")) {
                    while (rs.next()) out("PREPARED", rs.getString(1), rs.getString(2));
                }
            }

            try (PreparedStatement ins = c.prepareStatement(
                    "insert into " + table + " (name, score) values (?, ?)")) {
                for (int i = 0; i < 5; i++) {
                    ins.setString(1, "n" + i);
                    ins.setDouble(2, i * 1.5);
                    ins.addBatch();
                }
                out("BATCH", Arrays.toString(ins.executeBatch()));
            }

            c.setAutoCommit(false);
            try (Statement s = c.createStatement()) {
                s.executeUpdate("insert into " + table + " (name) values ('rolled back')");
            }
            c.rollback();
            c.setAutoCommit(true);

            try (Statement s = c.createStatement()) {
                try {
                    s.executeQuery("select 1 / 0");
                    out("ERROR", "none");
                } catch (SQLException e) {
                    out("ERROR", e.getSQLState(), e.getMessage());
                }
                try (ResultSet rs = s.executeQuery(
                        "select count(*), sum(score), string_agg(name, ',' order by id) from " + table)) {
                    rs.next();
                    out("ROWS", rs.getLong(1), rs.getDouble(2), rs.getString(3));
                }
            }

            try (ResultSet rs = md.getTables(null, "public", table, new String[] {"TABLE"})) {
                while (rs.next()) out("TABLE", rs.getString("TABLE_SCHEM"), rs.getString("TABLE_NAME"),
                        rs.getString("TABLE_TYPE"));
            }
            try (ResultSet rs = md.getColumns(null, "public", table, "%")) {
                while (rs.next()) out("COLUMN", rs.getInt("ORDINAL_POSITION"), rs.getString("COLUMN_NAME"),
                        rs.getString("TYPE_NAME"), rs.getInt("DATA_TYPE"), rs.getInt("COLUMN_SIZE"),
                        rs.getString("IS_NULLABLE"), rs.getString("IS_AUTOINCREMENT"));
            }
            try (ResultSet rs = md.getPrimaryKeys(null, "public", table)) {
                while (rs.next()) out("PK", rs.getString("COLUMN_NAME"), rs.getString("PK_NAME"));
            }
            try (Statement s = c.createStatement()) {
                s.execute("drop table " + table);
            }
            out("DONE");
        }
    }
}
"""


@pytest.fixture(scope="module")
def jdbc_classes(tmp_path_factory) -> Path:
    javac, java = shutil.which("javac"), shutil.which("java")
    if not (javac and java):
        pytest.skip("no JDK: javac/java not on PATH")
    if not JAR.exists():
        pytest.skip(f"pgJDBC jar missing: {JAR} (Debian package libpostgresql-jdbc-java)")
    build = tmp_path_factory.mktemp("jdbc")
    (build / "SieveJdbc.java").write_text(PROGRAM)
    compiled = subprocess.run(
        [javac, "-cp", str(JAR), "-d", str(build), str(build / "SieveJdbc.java")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert compiled.returncode == 0, compiled.stderr
    return build


def test_jdbc_prepared_and_metadata(sieve_server, jdbc_classes, unique_name):
    table = unique_name("jdbc_scores")
    url = (
        f"jdbc:postgresql://{sieve_server.host}:{sieve_server.port}/postgres?user=postgres&prepareThreshold=2"
    )
    result = subprocess.run(
        ["java", "-cp", f"{jdbc_classes}:{JAR}", "SieveJdbc", url, table],
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line.split("\t") for line in result.stdout.splitlines()]
    by_kind: dict[str, list[list[str]]] = {}
    for kind, *cells in lines:
        by_kind.setdefault(kind, []).append(cells)

    assert by_kind["PRODUCT"] == [["PostgreSQL", "18"]]
    assert by_kind["THRESHOLD"] == [["2"]]
    execs = by_kind["EXEC"]
    # value, text, "another row?"
    assert [cells[:4] for cells in execs] == [[str(i), str(2 * i), f"v{i}!", "false"] for i in range(10)]
    # the first execution runs as an unnamed statement; from the threshold (2) on, the statement
    # is a named server-side prepared statement that stays in the backend session
    assert [cells[4] for cells in execs] == ["0"] + ["1"] * 9
    assert all(cells[5] == "true" for cells in execs)  # "the next execution is server-prepared"
    prepared = by_kind["PREPARED"]
    assert any(
        name.startswith("S_") and statement == "select $1::int * 2 as doubled, $2 || '!' as shout"
        for name, statement in prepared
    ), prepared

    assert by_kind["BATCH"] == [["[1, 1, 1, 1, 1]"]]
    assert by_kind["ERROR"] == [["22012", "ERROR: division by zero"]]
    assert by_kind["ROWS"] == [["5", "15.0", "n0,n1,n2,n3,n4"]]

    assert by_kind["TABLE"] == [["public", table, "TABLE"]]
    # ORDINAL_POSITION, COLUMN_NAME, TYPE_NAME, DATA_TYPE (java.sql.Types), COLUMN_SIZE, nullable, autoinc
    assert by_kind["COLUMN"] == [
        ["1", "id", "serial", "4", "10", "NO", "YES"],
        ["2", "name", "varchar", "12", "40", "NO", "NO"],
        ["3", "score", "float8", "8", "17", "YES", "NO"],
        ["4", "created", "timestamptz", "93", "35", "YES", "NO"],
    ]
    assert by_kind["PK"] == [["id", f"{table}_pkey"]]
    assert by_kind["DONE"] == [[]]
