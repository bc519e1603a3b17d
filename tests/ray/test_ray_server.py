"""SieveDB serving with --ray-address over a local two-node Ray cluster, in a loopback-only network
namespace: a 100,000-row model query equals the local pool's answer, and killing the worker node
mid-query still answers right, running and caching every input once, with the replica back."""

from __future__ import annotations

import pytest

from tests.ray.isolated import run_scenario

ROWS = 100_000


@pytest.fixture(scope="module")
def found() -> dict:
    return run_scenario("scenario_server", timeout=300)


def test_a_query_over_100k_rows_on_ray_equals_the_local_pools_answer(found):
    assert found["rows"] == ROWS
    assert found["ray_equals_local"] and found["ray_equals_onnxruntime"]
    assert min(found["label_counts"][1:]) > 10_000  # the model does tell rows apart
    for backend in ("ray", "local"):
        assert found[backend]["log"] == {"model_calls": {"cls": ROWS}, "cache_hits": 0}


def test_sieve_models_shows_the_replicas_and_figures_per_node(found):
    ((node, figures),) = found["ray"]["replicas"].items()
    assert node.startswith("127.0.0.1/")
    assert figures["replicas"] == 1 and figures["rows"] == ROWS and figures["batches"] >= ROWS // 4096
    assert figures["ms_per_row"] > 0 and figures["device"] == "ray:127.0.0.1:cpu"
    local = found["local"]["replicas"]["local"]
    assert local["rows"] == ROWS and local["replicas"] >= 1


def test_killing_the_worker_node_mid_query_still_gives_the_right_answer_once(found):
    k = found["kill"]
    assert k["killed_while_running"] and k["cached_before_kill"] > 0
    assert k["error"] is None and k["labels_equal"]
    assert k["log"] == {"model_calls": {"heavy": ROWS}, "cache_hits": 0}  # each input run once
    assert k["cache_rows"] == k["cache_distinct"] == ROWS  # and cached once


def test_the_models_replica_comes_back_on_the_node_that_joined(found):
    nodes = found["kill"]["replicas"]
    assert len(nodes) == 2
    assert sorted(n["replicas"] for n in nodes.values()) == [0, 1]
    assert sum(n["rows"] for n in nodes.values()) == ROWS
    after = found["kill"]["after"]
    assert after["labels_equal"] and after["log"]["model_calls"] == {"heavy": ROWS}
    alive = [n for n, f in after["replicas"].items() if f["replicas"]]
    assert alive == [n for n, f in nodes.items() if f["replicas"]]


def test_privileges_hold_on_ray_a_role_without_select_is_refused_one_with_it_gets_the_answer(found):
    after = found["kill"]["after"]
    assert after["outsider_sqlstate"] == "42501"
    assert after["labels_equal"] and after["log"] == {"model_calls": {"heavy": ROWS}, "cache_hits": 0}


def test_the_ray_backed_server_still_stops_cleanly_on_sigterm(found):
    assert found["ray_server_exit"] == 0
