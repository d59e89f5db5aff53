"""Cluster roles: per-node env (recipe env on workers too), Ray vs native scripts, rank arguments."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tasks.cluster import roles as cluster
from tasks.ops import travel
from tasks.errors import ConfigError, RunRecipeError
from tasks.plan import Options, make_plan
from tasks.recipe import parse

RECIPE = """\
recipe_version: "1"
name: Two
container: img
cluster_only: true
defaults: {port: 8000, host: 0.0.0.0, tensor_parallel: 2}
env:
  JSONV: '{"placement_group_options":{"strategy":"SPREAD"}}'
command: |
  vllm serve org/m --port {port} --host {host} \\
      -tp {tensor_parallel} --distributed-executor-backend ray
"""
NET = cluster.Network(ips={"198.18.0.11": "198.18.0.11", "198.18.0.12": "198.18.0.12",
                           "198.18.0.13": "198.18.0.13"}, eth_if="eth0", ib_if="rocep1s0f1,roceP2p1s0f1")


def plan_for(tmp_path: Path, text: str = RECIPE):  # type: ignore[no-untyped-def]
    return make_plan(parse(text, tmp_path / "two.yaml"), Options(nodes="198.18.0.11,198.18.0.12,198.18.0.13"))


def env_of(script: str) -> dict[str, str]:
    out = subprocess.run(["bash", "-c", script.split("\n# Serve")[0].split("\n# Start")[0].split("\n# Join")[0]
                          + "\nenv -0"], capture_output=True, text=True, check=True).stdout
    return dict(item.split("=", 1) for item in out.split("\0") if "=" in item)


def test_backend_is_native_unless_ray_is_asked_whatever_the_recipe_names(tmp_path: Path) -> None:
    """The origin's default since 2026-07 (origin-facts 6.1): a recipe naming the Ray backend still runs native."""
    assert cluster.backend(False) == "native" and cluster.backend(True) == "ray"
    for tail in (" --distributed-executor-backend ray", " --distributed-executor-backend mp",
                 " --distributed_executor_backend=ray", ""):
        plan = make_plan(parse(RECIPE.replace(" --distributed-executor-backend ray", tail), tmp_path / "two.yaml"),
                         Options(nodes="198.18.0.11,198.18.0.12,198.18.0.13"))
        mode, roles, _ = cluster.preview(plan)
        assert mode == "native", tail
        for role in roles:
            assert "--distributed-executor-backend" not in role.script and "--distributed_executor" not in role.script
            assert f"--node-rank {role.rank} --master-addr 198.18.0.11" in role.script
    ray_plan = make_plan(parse(RECIPE.replace(" --distributed-executor-backend ray", " --distributed-executor-backend mp"),
                               tmp_path / "two.yaml"), Options(nodes="198.18.0.11,198.18.0.12,198.18.0.13", ray=True))
    mode, (head, *_), _ = cluster.preview(ray_plan)
    assert mode == "ray" and head.script.rstrip().endswith("--distributed-executor-backend ray")


@pytest.mark.parametrize("mode", ["ray", "native"])
def test_every_node_gets_recipe_env_and_its_own_network_env(tmp_path: Path, mode: str) -> None:
    roles = cluster.roles(plan_for(tmp_path), mode, NET)
    assert [r.rank for r in roles] == [0, 1, 2]
    for role in roles:
        subprocess.run(["bash", "-n"], input=role.script, text=True, check=True)
        env = env_of(role.script)
        assert env["JSONV"] == '{"placement_group_options":{"strategy":"SPREAD"}}'
        assert env["VLLM_HOST_IP"] == env["RAY_NODE_IP_ADDRESS"] == role.node.host
        assert env["NCCL_SOCKET_IFNAME"] == env["GLOO_SOCKET_IFNAME"] == env["UCX_NET_DEVICES"] == "eth0"
        assert env["NCCL_IB_HCA"] == "rocep1s0f1,roceP2p1s0f1"
        assert env["RAY_memory_monitor_refresh_ms"] == "0"


def test_ray_head_waits_for_all_nodes_then_serves_with_ray_backend(tmp_path: Path) -> None:
    head, worker, _ = cluster.roles(plan_for(tmp_path), "ray", NET)
    assert "ray start --head --port 29501" in head.script and "-ge 3 ]" in head.script
    assert head.script.rstrip().endswith("--distributed-executor-backend ray")
    assert "exec ray start --block --address=198.18.0.11:29501" in worker.script
    assert "vllm serve" not in worker.script


def test_native_ranks_and_headless_workers(tmp_path: Path) -> None:
    roles = cluster.roles(plan_for(tmp_path), "native", NET)
    for role in roles:
        tail = role.script.split("# Serve\n")[1]
        assert "--distributed-executor-backend" not in tail
        assert f"--nnodes 3 --node-rank {role.rank} --master-addr 198.18.0.11 --master-port 29501" in tail
        assert tail.rstrip().endswith("--headless") == (role.rank > 0)


def test_no_ib_means_no_hca_and_no_eth_means_no_ifname(tmp_path: Path) -> None:
    net = cluster.Network(ips=NET.ips)
    env = env_of(cluster.roles(plan_for(tmp_path), "native", net)[1].script)
    assert "NCCL_IB_HCA" not in env and "NCCL_SOCKET_IFNAME" not in env


def test_copy_hosts_from_env_belong_to_its_cluster_nodes(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("CLUSTER_NODES=198.18.0.11,198.18.0.12,198.18.0.13\nCOPY_HOSTS=n2,root@n3:2222\n")
    recipe = parse(RECIPE, tmp_path / "two.yaml")
    plan = make_plan(recipe, Options(config=env))
    assert [h.target for h in plan.copy_hosts] == ["n2", "root@n3:2222"]
    with_n = make_plan(recipe, Options(config=env, nodes="198.18.0.11,198.18.0.12"))
    assert with_n.copy_hosts is None
    assert any("COPY_HOSTS is not used with -n" in w for w in with_n.warnings)
    env.write_text("CLUSTER_NODES=198.18.0.11,198.18.0.12\nCOPY_HOSTS=n2;rm -rf /\n")
    with pytest.raises(RunRecipeError, match="COPY_HOSTS"):
        make_plan(recipe, Options(config=env))


def test_copy_hosts_pair_with_workers_by_docker_engine_id() -> None:
    from tasks.nodes import parse_list

    n2, head, stranger = parse_list("n2,n1,10.0.0.9", "test")
    ids = {"198.18.0.12": "ID-2", "198.18.0.13": "ID-3"}
    routes = cluster.pair_copy_hosts(ids, [(n2, "ID-2"), (head, "ID-1")], head_id="ID-1")
    assert routes == {"198.18.0.12": n2, "198.18.0.13": None}  # the head entry is skipped, n3 gets no copies
    with pytest.raises(ConfigError, match="COPY_HOSTS entry '10.0.0.9' reaches a docker engine that belongs to no node"):
        cluster.pair_copy_hosts(ids, [(stranger, "ID-9")], head_id="ID-1")


def test_copy_hops_are_the_workers_lacking_each_thing_in_chain_order() -> None:
    from tasks.connect.chain import Worker
    from tasks.connect import SshLink

    workers = [Worker(n, SshLink(("ssh", n))) for n in ("a", "b", "c")]
    needs = {"a": (5, 0), "b": (0, 0), "c": (7, 3)}  # (image bytes, weight bytes) from bytes_to_copy
    assert [[w.name for w in chain] for chain in travel.copy_hops(workers, needs)] == [["a", "c"], ["c"]]
