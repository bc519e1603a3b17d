"""Crash isolation and backpressure, with real worker processes killed and stopped by signal."""

from __future__ import annotations

import asyncio
import logging
import os
import signal

import numpy as np
import pytest

from inference import InferencePool, ModelRef, PoolClosedError, WorkerCrashedError
from tests.inference.conftest import Runner, direct


@pytest.fixture()
def lone_worker():
    """A pool with one worker holding one batch at a time, so queued work stays in the pool."""
    r = Runner(InferencePool(workers=1, intra_op_threads=1, pipeline_depth=1, max_batch_rows=4096))
    yield r
    r.close()


async def wait_until(predicate, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.005)


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGSEGV], ids=["SIGKILL", "SIGSEGV"])
def test_worker_killed_mid_request(lone_worker, zoo, wide_mlp_path, signum, caplog):
    pool = lone_worker.pool
    slow = ModelRef("wide@1", wide_mlp_path)
    oracle = ModelRef("oracle@1", zoo.mlp_path)
    heavy = np.random.default_rng(0).standard_normal((3000, 64)).astype(np.float32)
    # Warm the session so that the kill lands inside InferenceSession.run.
    lone_worker.run(pool.infer(slow, {"X": heavy[:8]}))
    victim = pool.workers()[0].pid

    async def scenario():
        doomed = asyncio.ensure_future(pool.infer(slow, {"X": heavy}))
        await wait_until(lambda: pool.workers()[0].in_flight == 1)
        # Queued behind it (depth 1): not in flight, so it must survive the crash.
        bystander = asyncio.ensure_future(pool.infer(oracle, {"X": zoo.digits.x[:20]}))
        await asyncio.sleep(0.05)
        os.kill(victim, signum)
        with pytest.raises(WorkerCrashedError) as err:
            await doomed
        return err.value, await bystander

    with caplog.at_level(logging.WARNING, logger="sievedb.inference"):
        error, survived = lone_worker.run(scenario())
    assert "wide@1" in str(error) and signal.Signals(signum).name in str(error)
    np.testing.assert_array_equal(survived["label"], direct(zoo.mlp_path, {"X": zoo.digits.x[:20]})[0])
    # The pool restarted the worker and keeps serving, the crashed model included.
    out = lone_worker.run(pool.infer(slow, {"X": heavy[:16]}))
    np.testing.assert_array_equal(out["label"], direct(wide_mlp_path, {"X": heavy[:16]})[0])
    info = pool.workers()[0]
    assert info.pid != victim and info.restarts == 1 and info.state == "ready"
    assert pool.stats("wide@1").crashes == 1
    assert any("restarting" in r.getMessage() for r in caplog.records)


def test_queue_limit_is_respected(zoo):
    runner = Runner(
        InferencePool(workers=1, intra_op_threads=1, pipeline_depth=1, queue_limit=2, max_batch_rows=10)
    )
    pool = runner.pool
    ref = ModelRef("oracle@1", zoo.mlp_path)
    x = zoo.digits.x
    pid = pool.workers()[0].pid
    seen: list[int] = []

    async def scenario():
        os.kill(pid, signal.SIGSTOP)  # the worker holds one batch and takes no more
        try:
            tasks = [
                asyncio.ensure_future(pool.infer(ref, {"X": x[i * 10 : (i + 1) * 10]})) for i in range(6)
            ]
            for _ in range(40):
                await asyncio.sleep(0.005)
                seen.append(pool.queued_requests)
            # One dispatched, two queued, three waiting for room in the queue.
            assert pool.queued_requests == 2
            assert not any(t.done() for t in tasks)
        finally:
            os.kill(pid, signal.SIGCONT)
        while not all(t.done() for t in tasks):
            seen.append(pool.queued_requests)
            await asyncio.sleep(0.001)
        return [t.result() for t in tasks]

    try:
        results = runner.run(scenario())
    finally:
        runner.close()
    assert max(seen) == 2
    label = direct(zoo.mlp_path, {"X": x[:60]})[0]
    np.testing.assert_array_equal(np.concatenate([r["label"] for r in results]), label)
    with pytest.raises(PoolClosedError):
        asyncio.run(pool.infer(ref, {"X": x[:1]}))


def test_idle_worker_killed_is_replaced(lone_worker, zoo):
    pool = lone_worker.pool
    ref = ModelRef("oracle@1", zoo.mlp_path)
    victim = pool.workers()[0].pid
    os.kill(victim, signal.SIGKILL)

    async def scenario():
        await wait_until(lambda: pool.workers()[0].pid != victim and pool.workers()[0].state == "ready")
        return await pool.infer(ref, {"X": zoo.digits.x[:5]})

    out = lone_worker.run(scenario())
    np.testing.assert_array_equal(out["label"], direct(zoo.mlp_path, {"X": zoo.digits.x[:5]})[0])
    empty = lone_worker.run(pool.infer(ref, {"X": zoo.digits.x[:0]}))
    assert empty["label"].shape == (0,) and empty["probabilities"].shape == (0, 10)
