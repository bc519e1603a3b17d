"""Many sessions at once: every transaction lands exactly once, and sessions stay isolated."""

from __future__ import annotations

import asyncio

import asyncpg

CLIENTS = 50
TRANSACTIONS = 100


async def _client(dsn: str, client_id: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for i in range(TRANSACTIONS):
            async with conn.transaction():
                await conn.execute("insert into ledger (client, seq) values ($1, $2)", client_id, i)
                await conn.execute("update ledger_totals set n = n + 1 where client = $1", client_id)
    finally:
        await conn.close()


async def _run(dsn: str) -> None:
    setup = await asyncpg.connect(dsn)
    await setup.execute(
        "drop table if exists ledger, ledger_totals;"
        "create table ledger (client int, seq int, primary key (client, seq));"
        "create table ledger_totals (client int primary key, n int not null)"
    )
    await setup.executemany("insert into ledger_totals values ($1, 0)", [(c,) for c in range(CLIENTS)])
    await asyncio.gather(*(_client(dsn, c) for c in range(CLIENTS)))
    rows = await setup.fetch(
        "select client, count(*) as n, count(distinct seq) as d from ledger group by client"
    )
    totals = dict(await setup.fetch("select client, n from ledger_totals"))
    await setup.close()
    assert len(rows) == CLIENTS
    for row in rows:
        assert row["n"] == TRANSACTIONS and row["d"] == TRANSACTIONS
        assert totals[row["client"]] == TRANSACTIONS


def test_fifty_clients_hundred_transactions_each(sieve_server):
    asyncio.run(_run(sieve_server.dsn()))


def test_rolled_back_work_is_invisible_to_other_sessions(sieve_server):
    async def scenario() -> None:
        a = await asyncpg.connect(sieve_server.dsn())
        b = await asyncpg.connect(sieve_server.dsn())
        await a.execute("drop table if exists iso; create table iso (v int)")
        tx = a.transaction()
        await tx.start()
        await a.execute("insert into iso values (1)")
        assert await b.fetchval("select count(*) from iso") == 0
        await tx.rollback()
        assert await a.fetchval("select count(*) from iso") == 0
        await a.close()
        await b.close()

    asyncio.run(scenario())
