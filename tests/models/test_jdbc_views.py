"""pgJDBC over a virtual table: metadata sees the view, a reused server-prepared statement with
parameters gets exact answers."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.models.conftest import direct_run, label_function, label_view

JAR = "/usr/share/java/postgresql.jar"

PROGRAM = r"""
import java.sql.*;

public class ViewJdbc {
    public static void main(String[] args) throws Exception {
        try (Connection c = DriverManager.getConnection(args[0])) {
            try (ResultSet rs = c.getMetaData().getColumns(null, "public", "jdbc_v", "%")) {
                while (rs.next()) System.out.println("COLUMN\t" + rs.getString("COLUMN_NAME") + "\t"
                        + rs.getString("TYPE_NAME"));
            }
            try (PreparedStatement ps = c.prepareStatement(
                    "select id, digit from jdbc_v where id >= ? and id < ? order by id")) {
                for (int low = 0; low < 100; low += 20) {
                    ps.setInt(1, low);
                    ps.setInt(2, low + 20);
                    try (ResultSet rs = ps.executeQuery()) {
                        while (rs.next()) System.out.println("ROW\t" + rs.getInt(1) + "\t" + rs.getInt(2));
                    }
                }
            }
        }
    }
}
"""


def test_jdbc_sees_the_view_and_runs_prepared_queries(world, tmp_path):
    javac = shutil.which("javac")
    if not javac or not Path(JAR).exists():
        pytest.skip("no JDK or pgJDBC jar (make test installs them when run as root)")
    with world.connect() as conn:
        label_function(conn, "jdbc_oracle")
        label_view(conn, "jdbc_v", "jdbc_oracle")
    (tmp_path / "ViewJdbc.java").write_text(PROGRAM)
    subprocess.run([javac, "-cp", JAR, "-d", str(tmp_path), str(tmp_path / "ViewJdbc.java")], check=True)
    url = (
        f"jdbc:postgresql://{world.server.host}:{world.server.port}/postgres?user=postgres&prepareThreshold=2"
    )
    done = subprocess.run(
        ["java", "-cp", f"{tmp_path}:{JAR}", "ViewJdbc", url], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [line.split("\t") for line in done.stdout.splitlines()]
    assert [c[1:] for c in lines if c[0] == "COLUMN"] == [["id", "int4"], ["digit", "int4"]]
    expected = direct_run(world.mlp_path, {"X": world.digits.x[:100]})["label"]
    assert [(int(r[1]), int(r[2])) for r in lines if r[0] == "ROW"] == [
        (i, int(expected[i])) for i in range(100)
    ]
    with world.connect() as conn:
        runs = conn.execute(
            "select (model_calls->>'jdbc_oracle')::int from sieve.query_log "
            "where model_calls ? 'jdbc_oracle' order by query_id"
        ).fetchall()
    # each execution runs only its own 20 rows (a re-planned, already cached batch runs none)
    assert [r[0] for r in runs if r[0]] == [20] * 5
