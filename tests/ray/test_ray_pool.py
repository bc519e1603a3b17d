"""RayInferencePool on a local two-node Ray cluster (head + one worker), inside a loopback-only
network namespace: batching across callers, a replica killed mid-batch, replicas following the load."""

from __future__ import annotations

import pytest

from tests.ray.isolated import run_scenario


@pytest.fixture(scope="module")
def found() -> dict:
    return run_scenario("scenario_pool", timeout=240)


def test_the_pool_joins_both_nodes_of_the_cluster(found):
    assert found["cluster"] == {"nodes": 2, "cpus": 2.0}


def test_concurrent_callers_share_one_batch_and_get_their_own_rows(found):
    b = found["batching"]
    assert b["labels_equal"] and b["probabilities_close"]
    assert b["requests"] == 8
    assert b["batches"] < 8
    assert b["max_batch_rows"] > 50
    assert b["devices"] == ["ray:127.0.0.1:cpu"]
    (node,) = b["replicas"].values()
    assert node["replicas"] == 1 and node["rows"] == 400 and node["ms_per_row"] > 0


def test_a_replica_killed_mid_batch_is_replaced_and_the_batch_runs_again(found):
    k = found["kill"]
    assert k["labels_equal"] and k["rows"] == 4096
    assert k["crashes"] == 1
    assert k["victim"] not in k["ready_serials"]
    assert k["model_replicas"] == 1  # the replacement


def test_replicas_grow_under_a_long_queue_within_bounds_and_idle_back_to_one(found):
    g = found["growth"]
    assert g["labels_equal"]
    assert g["batches"] == 8
    assert g["most_replicas"] == g["max_replicas"] == 2
    (node,) = g["nodes"].values()
    assert node["replicas"] == 1 and node["rows"] == 8192


def test_a_batch_whose_replicas_keep_dying_fails_naming_the_model_and_the_next_runs(found):
    a = found["attempts"]
    assert a["error"] is not None and "'slow@once'" in a["error"]
    assert "1 time(s) of 1 allowed" in a["error"]
    assert a["next_request_ok"]
    assert a["queued"] == 0


def test_closing_without_draining_fails_the_batch_in_flight_instead_of_hanging(found):
    assert found["attempts"]["closed_in_flight"] == "inference pool is closed"


def test_replicas_ask_for_a_gpu_where_the_cluster_has_one_unless_the_model_is_pinned_to_cpu(found):
    g = found["gpu"]
    assert g["gpus"] == 1
    assert g["gpu_model_nodes"] == [g["gpu_node"]]
    assert g["cpu_model_nodes"] and g["cpu_model_nodes"] != [g["gpu_node"]]
    assert g["devices"] == ["ray:127.0.0.1:cpu"]  # the GPU is only declared: ORT falls back to CPU
    assert g["labels_equal"]


def test_a_pool_that_did_not_join_the_cluster_does_not_leave_it(found):
    assert found["connected_after_close"] is True
