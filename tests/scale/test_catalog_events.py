"""The catalog listener's reloads, without a Postgres: bursts are debounced, failures retried."""

from __future__ import annotations

import asyncio

from planner import catalog_events
from planner.catalog_events import CatalogEvents


async def _never_connects():
    raise OSError("no Postgres here")


def test_a_burst_of_notifications_costs_one_reload():
    reloads: list[int] = []

    async def reload() -> None:
        reloads.append(1)

    async def main() -> None:
        events = CatalogEvents(_never_connects, reload, "db")
        for _ in range(100):
            events.poke()
        await asyncio.sleep(catalog_events.DEBOUNCE_S * 4)
        events.poke()  # after the reload: one more
        await asyncio.sleep(catalog_events.DEBOUNCE_S * 4)
        await events.close()

    asyncio.run(main())
    assert len(reloads) == 2


def test_a_failed_reload_is_tried_again(monkeypatch):
    monkeypatch.setattr(catalog_events, "RETRY_MAX_S", 0.01)
    calls: list[int] = []

    async def reload() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionResetError("the catalog read failed")

    async def main() -> int:
        events = CatalogEvents(_never_connects, reload, "db")
        events.poke()
        await asyncio.sleep(catalog_events.DEBOUNCE_S * 6)
        await events.close()
        return events.reloads

    assert asyncio.run(main()) == 1 and len(calls) == 2
