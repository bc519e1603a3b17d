"""Humans as the oracle, through SQL (issue 13): LANGUAGE labels functions, the label queue and
SV001, sieve.label / sieve.unlabel, waiting for labels, relabelling, privileges and bad input,
on a live server over real clients."""

from __future__ import annotations

import threading
import time

import asyncpg
import psycopg
import pytest

from planner.labels.tokens import database_of

RECALL = (
    "SELECT id FROM digits WHERE {f}(pixels) RECALL TARGET 90% CONFIDENCE 95% BUDGET 300 "
    "USING PROXY digit_proxy_p7(pixels)"
)


def make_function(conn, name: str, returns: str = "boolean", options: str = "") -> None:
    extra = f", '{options}'" if options else ""
    conn.execute(
        f"CREATE FUNCTION {name}(image bytea) RETURNS {returns} LANGUAGE labels AS 'Is it a bird?'{extra}"
    )
    conn.execute(f"REVOKE EXECUTE ON FUNCTION {name}(bytea) FROM PUBLIC")  # Postgres grants it by default
    conn.execute(f"GRANT EXECUTE ON FUNCTION {name}(bytea) TO alice")


def error_of(conn, sql: str) -> psycopg.Error:
    with pytest.raises(psycopg.Error) as info:
        conn.execute(sql)
    return info.value


def pending_keys(conn, function: str) -> list[str]:
    rows = conn.execute(
        "SELECT key FROM sieve.label_requests WHERE function = %s ORDER BY key::int", (function,)
    )
    return [r[0] for r in rows]


def last_log(conn) -> tuple:
    return conn.execute(
        "SELECT model_calls, cache_hits FROM sieve.query_log ORDER BY query_id DESC LIMIT 1"
    ).fetchone()


# -- definitions -----------------------------------------------------------------------------------


def test_a_labels_function_is_a_catalog_model_with_an_installed_function(world):
    with world.connect() as conn:
        make_function(conn, "bird_a", options='{"choices": [true, false]}')
        name, version, options, language = conn.execute(
            "SELECT name, version, options, signature->>'language' FROM sieve.models WHERE name = 'bird_a'"
        ).fetchone()
        assert (name, version, language) == ("bird_a", 1, "labels")
        assert options == {"instructions": "Is it a bird?", "choices": [True, False]}
        # \df sees a real function of the declared signature
        (args, result) = conn.execute(
            "SELECT pg_get_function_arguments(oid), pg_get_function_result(oid) FROM pg_proc "
            "WHERE proname = 'bird_a'"
        ).fetchone()
        assert (args, result) == ("image bytea", "boolean")
        conn.execute("DROP FUNCTION bird_a(bytea)")
        assert conn.execute("SELECT count(*) FROM sieve.models WHERE name = 'bird_a'").fetchone() == (0,)


def test_choices_are_checked_against_the_result_type(world):
    with world.connect() as conn:
        head = "create function bad(x bytea) returns"
        cases = {
            "int language labels as 'q'": "42P13",  # no choices
            "int language labels as 'q', '{\"choices\": [1, \"a\"]}'": "42P13",
            "boolean language labels as 'q', '{\"choices\": [1]}'": "42P13",
            "bytea language labels as 'q'": "42P13",
            "real[] language labels as 'q', '{\"choices\": [1]}'": "42P13",
            "table (a boolean) language labels as 'q'": "0A000",
            "boolean language labels as 'q', '{\"colors\": 1}'": "22023",
            "int2 language labels as 'q', '{\"choices\": [70000]}'": "42P13",
        }
        for rest, sqlstate in cases.items():
            assert error_of(conn, f"{head} {rest}").sqlstate == sqlstate, rest
        assert conn.execute("SELECT count(*) FROM sieve.models WHERE name LIKE 'bad%'").fetchone() == (0,)
        conn.execute(
            "create function species(x bytea) returns text language labels as 'Which bird?', "
            '\'{"choices": ["wren", "robin"]}\''
        )
        conn.execute("drop function species(bytea)")


def test_registering_a_labels_function_takes_the_model_admin_role(world):
    with world.connect("bob") as conn:
        err = error_of(conn, "create function bob_f(x bytea) returns boolean language labels as 'q'")
        assert err.sqlstate == "42501"


# -- exact queries, requests, sieve.label --------------------------------------------------------


def test_an_exact_query_files_requests_fails_with_sv001_and_answers_once_labelled(world):
    with world.connect() as conn, world.connect("alice") as alice, world.connect("bob") as bob:
        make_function(conn, "bird_b")
        err = error_of(alice, "SELECT id FROM photos WHERE id <= 4 AND bird_b(image) ORDER BY id")
        assert err.sqlstate == "SV001"
        assert "4 of 4 labels pending for function bird_b" in err.diag.message_primary
        assert "sieve.labelling_link('bird_b')" in err.diag.message_hint
        assert "sieve.label('bird_b'" in err.diag.message_hint
        assert pending_keys(alice, "bird_b") == ["1", "2", "3", "4"]
        row = alice.execute(
            "SELECT \"table\", requested_by FROM sieve.label_requests WHERE function = 'bird_b' LIMIT 1"
        ).fetchone()
        assert row == ("public.photos", "alice")
        assert pending_keys(bob, "bird_b") == []  # no EXECUTE: the requests are not his to see
        # asking again keeps the same requests
        ids = [
            r[0]
            for r in alice.execute("SELECT request_id FROM sieve.label_requests WHERE function = 'bird_b'")
        ]
        error_of(alice, "SELECT id FROM photos WHERE id <= 4 AND bird_b(image)")
        again = [
            r[0]
            for r in alice.execute("SELECT request_id FROM sieve.label_requests WHERE function = 'bird_b'")
        ]
        assert sorted(again) == sorted(ids)
        for key, value in ((1, "true"), (2, "false"), (3, "true"), (4, "false")):
            (said,) = alice.execute(f"SELECT sieve.label('bird_b', 'photos', {key}, {value})").fetchone()
            assert said == f"labelled photos {key}: {value} (version 1)"
        assert pending_keys(alice, "bird_b") == []
        rows = alice.execute("SELECT id FROM photos WHERE id <= 4 AND bird_b(image) ORDER BY id").fetchall()
        assert rows == [(1,), (3,)]
        assert last_log(alice) == ({"bird_b": 4}, 0)  # the labels it read first count as model calls
        alice.execute("SELECT id FROM photos WHERE id <= 4 AND bird_b(image)")
        assert last_log(alice) == ({"bird_b": 0}, 4)


def test_sieve_label_the_same_value_again_is_a_no_op_and_a_new_value_is_a_new_version(world):
    with world.connect() as conn:
        make_function(conn, "bird_c")
        conn.execute("CREATE VIEW bird_c_view AS SELECT id, bird_c(image) AS bird FROM photos")
        # labelled without a request: the row is read and the request filed on the spot
        assert conn.execute("SELECT sieve.label('bird_c', 'photos', 5, false)").fetchone() == (
            "labelled photos 5: false (version 1)",
        )
        assert conn.execute("SELECT sieve.label('bird_c', 'photos', 5, 'f')").fetchone() == (
            "unchanged: photos 5 is already labelled false (version 1)",
        )
        assert conn.execute("SELECT bird FROM bird_c_view WHERE id = 5").fetchone() == (False,)
        assert conn.execute("SELECT sieve.label('bird_c', 'photos', 5, true)").fetchone() == (
            "relabelled photos 5: false -> true (version 2)",
        )
        assert conn.execute("SELECT version FROM sieve.models WHERE name = 'bird_c'").fetchone() == (2,)
        assert conn.execute("SELECT bird FROM bird_c_view WHERE id = 5").fetchone() == (True,)
        history = conn.execute(
            "SELECT h.action, h.value, h.previous, h.version, h.labelled_by FROM sieve.label_history h "
            "JOIN sieve.models m ON m.id = h.model_id WHERE m.name = 'bird_c' ORDER BY entry_id"
        ).fetchall()
        assert history == [("label", False, None, 1, "postgres"), ("relabel", True, False, 2, "postgres")]
        # unlabel takes one's own last label back: a relabel goes back to the value before it
        assert conn.execute("SELECT sieve.unlabel('bird_c', 'photos', 5)").fetchone() == (
            "unlabelled photos 5 (version 3)",
        )
        assert conn.execute("SELECT bird FROM bird_c_view WHERE id = 5").fetchone() == (False,)


def test_bad_labels_are_refused_and_write_nothing(world):
    with world.connect() as conn, world.connect("bob") as bob:
        make_function(conn, "bird_d")
        conn.execute(
            "CREATE FUNCTION bird_kind(image bytea) RETURNS int LANGUAGE labels AS 'How many?', "
            "'{\"choices\": [0, 1, 2]}'"
        )
        conn.execute("CREATE TABLE other (id int PRIMARY KEY, picture bytea)")
        conn.execute("INSERT INTO other VALUES (1, '\\x01')")
        cases = {
            "SELECT sieve.label('bird_d', 'photos', 1, 'maybe')": "22P02",  # not a boolean
            "SELECT sieve.label('bird_kind', 'photos', 1, 'x')": "22P02",
            "SELECT sieve.label('bird_kind', 'photos', 1, 7)": "22023",  # not a choice
            "SELECT sieve.label('no_such_function', 'photos', 1, true)": "42883",
            "SELECT sieve.label('digit_proxy_p7', 'photos', 1, true)": "42809",  # a model, not labels
            "SELECT sieve.label('bird_d', 'no_such_table', 1, true)": "42P01",
            "SELECT sieve.label('bird_d', 'photos', 999, true)": "P0002",  # no such row
            "SELECT sieve.label('bird_d', 'other', 1, true)": "42P10",  # no column named image
            "SELECT sieve.label('bird_d', 'photos', 1, NULL::boolean)": "22004",
        }
        for sql, sqlstate in cases.items():
            assert error_of(conn, sql).sqlstate == sqlstate, sql
        assert error_of(bob, "SELECT sieve.label('bird_d', 'photos', 1, true)").sqlstate == "42501"
        assert error_of(bob, "SELECT id FROM photos WHERE bird_d(image)").sqlstate == "42501"
        labelled = conn.execute(
            "SELECT count(*) FROM sieve.label_history h JOIN sieve.models m ON m.id = h.model_id "
            "WHERE m.name IN ('bird_d', 'bird_kind')"
        ).fetchone()
        assert labelled == (0,)


def test_a_request_whose_row_was_deleted_is_refused_clearly(world):
    with world.connect() as conn:
        make_function(conn, "bird_e")
        conn.execute("CREATE TABLE doomed (id int PRIMARY KEY, image bytea)")
        conn.execute("INSERT INTO doomed VALUES (1, '\\x01'), (2, '\\x02')")
        assert error_of(conn, "SELECT id FROM doomed WHERE bird_e(image)").sqlstate == "SV001"
        conn.execute("DELETE FROM doomed WHERE id = 2")
        err = error_of(conn, "SELECT sieve.label('bird_e', 'doomed', 2, true)")
        assert err.sqlstate == "P0002" and "no longer exists" in err.diag.message_primary
        assert pending_keys(conn, "bird_e") == ["1", "2"]  # nothing lost: the request stays


def test_the_placeholders_describe_over_the_extended_protocol(world):
    async def run() -> str:
        conn = await asyncpg.connect(world.server.dsn())
        try:
            await conn.execute(
                "CREATE FUNCTION bird_f(image bytea) RETURNS boolean LANGUAGE labels AS 'Bird?'"
            )
            said = await conn.fetchval("SELECT sieve.label('bird_f', 'photos', 6, true)")
            bound = await conn.fetchval(
                "SELECT sieve.label($1, $2, $3::int, $4::boolean)", "bird_f", "photos", 7, False
            )
            assert bound == "labelled photos 7: false (version 1)"
            return said
        finally:
            await conn.close()

    import asyncio

    assert asyncio.run(run()) == "labelled photos 6: true (version 1)"


def test_links_name_the_web_face_and_carry_a_token_for_the_role(world):
    with world.connect() as conn, world.connect("alice") as alice, world.connect("bob") as bob:
        make_function(conn, "bird_g")
        (link,) = alice.execute("SELECT sieve.labelling_link('bird_g')").fetchone()
        base = f"http://127.0.0.1:{world.http_port}"
        assert link.startswith(f"{base}/label?token=")
        token = link.split("token=", 1)[1]
        assert database_of(token) == "postgres"
        role, scope, function, days = conn.execute(
            "SELECT t.role, t.scope, m.name, extract(day FROM t.expires_at - t.created_at)::int "
            "FROM sieve.label_tokens t JOIN sieve.models m ON m.id = t.model_id "
            "WHERE t.token_sha256 = sha256(%s)",
            (token.encode(),),
        ).fetchone()
        assert (role, scope, function, days) == ("alice", "label", "bird_g", 7)
        (status,) = bob.execute("SELECT sieve.status_link()").fetchone()
        assert status.startswith(f"{base}/status?token=")
        assert error_of(bob, "SELECT sieve.labelling_link('bird_g')").sqlstate == "42501"
        alice.execute("SET sieve.labelling_link_ttl = '1 hour'")
        (short,) = alice.execute("SELECT sieve.labelling_link('bird_g')").fetchone()
        (hours,) = conn.execute(
            "SELECT round(extract(epoch FROM expires_at - created_at) / 3600) FROM sieve.label_tokens "
            "WHERE token_sha256 = sha256(%s)",
            (short.split("token=", 1)[1].encode(),),
        ).fetchone()
        assert hours == 1


# -- waiting -----------------------------------------------------------------------------------------


def _label_when_asked(world, function: str, keys: list[int], notices: list[str]) -> threading.Thread:
    """Label ``keys`` from another connection once the waiting statement has said it waits."""

    def work() -> None:
        deadline = time.monotonic() + 60
        while not notices and time.monotonic() < deadline:
            time.sleep(0.05)
        with world.connect() as other:
            for key in keys:
                other.execute(
                    f"SELECT sieve.label('{function}', 'photos', {key}, {str(key % 2 == 0).lower()})"
                )

    thread = threading.Thread(target=work)
    thread.start()
    return thread


def test_label_wait_waits_with_progress_notices_and_carries_on_with_the_labels(world):
    with world.connect() as conn:
        make_function(conn, "bird_h")
        notices: list[str] = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute("SET sieve.label_wait = '5min'")
        thread = _label_when_asked(world, "bird_h", [7, 8, 9], notices)
        rows = conn.execute(
            "SELECT id FROM photos WHERE id BETWEEN 7 AND 9 AND bird_h(image) ORDER BY id"
        ).fetchall()
        thread.join()
        assert rows == [(8,)]
        assert any(n.startswith("waiting for 3 of 3 labels of bird_h") for n in notices)
        assert last_log(conn) == ({"bird_h": 3}, 0)


def test_label_wait_ends_with_sv001_at_the_deadline_and_keeps_the_requests(world):
    with world.connect() as conn:
        make_function(conn, "bird_i")
        conn.execute("SET sieve.label_wait = '1s'")
        err = error_of(conn, "SELECT id FROM photos WHERE id IN (10, 11) AND bird_i(image)")
        assert err.sqlstate == "SV001" and "after waiting" in err.diag.message_primary
        assert pending_keys(conn, "bird_i") == ["10", "11"]


def test_a_cancel_or_statement_timeout_stops_the_wait(world):
    with world.connect() as conn:
        make_function(conn, "bird_j")
        conn.execute("SET sieve.label_wait = '30min'")
        conn.execute("SET statement_timeout = '1s'")
        assert error_of(conn, "SELECT id FROM photos WHERE id = 12 AND bird_j(image)").sqlstate == "57014"
        conn.execute("SET statement_timeout = 0")
        timer = threading.Timer(1.0, conn.cancel)
        timer.start()
        assert error_of(conn, "SELECT id FROM photos WHERE id = 12 AND bird_j(image)").sqlstate == "57014"
        timer.join()
        assert pending_keys(conn, "bird_j") == ["12"]


# -- an approximate query with people as the oracle -------------------------------------------------


def test_an_approximate_query_with_a_labels_oracle_queues_its_sample_then_meets_its_target(world):
    truth = {i for i, y in enumerate(world.digits.y) if y == 7}
    with world.connect() as conn:
        conn.execute(
            "CREATE FUNCTION is_seven(pixels real[]) RETURNS boolean LANGUAGE labels AS 'Is it a 7?'"
        )
        conn.execute("SET sieve.seed = 7")
        logged = conn.execute("SELECT count(*) FROM sieve.query_log").fetchone()[0]
        notices: list[str] = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        err = error_of(conn, RECALL.format(f="is_seven"))
        assert err.sqlstate == "SV001"
        # the run on unlabelled inputs answered nothing: no NOTICE of an answer, no query_log row
        assert notices == [] and conn.execute("SELECT count(*) FROM sieve.query_log").fetchone()[0] == logged
        keys = [int(k) for k in pending_keys(conn, "is_seven")]
        assert 0 < len(keys) <= 300  # the budget caps what people are asked
        for key in keys:  # the "human" answers: the true label column
            conn.execute(f"SELECT sieve.label('is_seven', 'digits', {key}, {str(key in truth).lower()})")
        rows = {r[0] for r in conn.execute(RECALL.format(f="is_seven"))}  # one round: no SV001 again
        assert pending_keys(conn, "is_seven") == []
        assert any("recall" in n for n in notices)  # the answer's NOTICE, from the run that answered
        assert len(rows & truth) / len(truth) >= 0.9
        mode, calls, labelled = conn.execute(
            "SELECT mode, model_calls, rows_labelled FROM sieve.query_log ORDER BY query_id DESC LIMIT 1"
        ).fetchone()
        assert mode == "recall" and calls["is_seven"] == labelled == len(keys)


def test_an_approximate_query_under_label_wait_completes_once_its_sample_is_labelled(world):
    truth = {i for i, y in enumerate(world.digits.y) if y == 7}
    with world.connect() as conn:
        conn.execute("CREATE FUNCTION seven_wait(pixels real[]) RETURNS boolean LANGUAGE labels AS 'A 7?'")
        conn.execute("SET sieve.seed = 11")
        conn.execute("SET sieve.label_wait = '5min'")
        notices: list[str] = []
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))

        done = threading.Event()

        def label_all() -> None:  # a labeller answering whatever is pending, while the query waits
            with world.connect() as other:
                while not done.is_set():
                    for key in pending_keys(other, "seven_wait"):
                        value = str(int(key) in truth).lower()
                        other.execute(f"SELECT sieve.label('seven_wait', 'digits', {key}, {value})")
                    time.sleep(0.1)

        thread = threading.Thread(target=label_all)
        thread.start()
        try:
            rows = {r[0] for r in conn.execute(RECALL.format(f="seven_wait"))}
        finally:
            done.set()
            thread.join()
        assert any(n.startswith("waiting for") and "labels of seven_wait" in n for n in notices)
        assert len(rows & truth) / len(truth) >= 0.9
        assert pending_keys(conn, "seven_wait") == []
