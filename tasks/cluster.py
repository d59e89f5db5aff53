"""What each node of a cluster runs: its role, its rank, its environment and its entry script.

Pure functions over a Plan. Two ways to spread vLLM over nodes:

- Ray: every node's container joins one Ray cluster (head first); the head's container waits until
  Ray reports every node, then runs the launch script with `--distributed-executor-backend ray`.
- native: every node runs vLLM itself with `--nnodes N --node-rank R --master-addr HEAD
  --master-port P`, workers `--headless`; no Ray.

Every node gets the recipe's env (the origin lost it on workers) and the per-node network env.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Mapping

from . import render
from .nodes import Node
from .plan import Plan

RAY_BACKEND = "--distributed-executor-backend"
DEFAULT_MASTER_PORT = 29501
RAY_OBJECT_STORE = "1073741824"
RAY_JOIN_TIMEOUT = 600


@dataclass(frozen=True)
class Network:
    """Per-run network facts: each node's address, and the interfaces NCCL and friends should use."""

    ips: Mapping[str, str]          # node target -> IP the others reach it at
    eth_if: str = ""
    ib_if: str = ""                 # comma list of HCAs; empty when there is no InfiniBand/RoCE
    master_port: int = DEFAULT_MASTER_PORT


@dataclass(frozen=True)
class Role:
    node: Node
    rank: int
    script: str                     # the container's entry script on this node

    @property
    def head(self) -> bool:
        return self.rank == 0


def backend(plan: Plan, ray: bool | None) -> str:
    """--ray/--no-ray decide; otherwise Ray when the recipe asks for it, native when it does not."""
    if ray is not None:
        return "ray" if ray else "native"
    return "ray" if RAY_BACKEND in plan.recipe.command.replace("_", "-") else "native"


def node_env(plan: Plan, node: Node, net: Network) -> dict[str, str]:
    """Recipe env plus what the origin sets per node (addresses, interfaces, Ray limits)."""
    ip = net.ips[node.target]
    env = dict(plan.recipe.env)
    env.update({"VLLM_HOST_IP": ip, "RAY_NODE_IP_ADDRESS": ip, "RAY_OVERRIDE_NODE_IP_ADDRESS": ip,
                "NCCL_IB_DISABLE": "0", "RAY_memory_monitor_refresh_ms": "0",
                "RAY_num_prestart_python_workers": "0", "RAY_object_store_memory": RAY_OBJECT_STORE})
    if net.eth_if:
        for key in ("MN_IF_NAME", "UCX_NET_DEVICES", "NCCL_SOCKET_IFNAME", "OMPI_MCA_btl_tcp_if_include",
                    "GLOO_SOCKET_IFNAME", "TP_SOCKET_IFNAME"):
            env[key] = net.eth_if
    if net.ib_if:
        env["NCCL_IB_HCA"] = net.ib_if
    return env


def roles(plan: Plan, mode: str, net: Network) -> list[Role]:
    """One Role per node, head first; each with the script its container runs."""
    head_ip = net.ips[plan.head.target]
    count = len(plan.nodes)
    out = []
    for rank, node in enumerate(plan.nodes):
        env = node_env(plan, node, net)
        if mode == "ray":
            command = plan.command if RAY_BACKEND in plan.command else render.finish(
                plan.command, [RAY_BACKEND, "ray"])
            script = render.render_template(
                "cluster-node.sh.j2", recipe_name=plan.recipe.name, recipe_file=str(plan.recipe.path),
                mode=f"ray, node {rank + 1} of {count}", env=env, role="ray-head" if rank == 0 else "ray-worker",
                ray_start=ray_start(rank, net.ips[node.target], head_ip, net.master_port),
                nodes=count, join_timeout=RAY_JOIN_TIMEOUT, command=command,
                exec_ok=not render.has_operators(command))
        else:
            command = native_command(plan, rank, count, head_ip, net.master_port)
            script = render.render_template(
                "cluster-node.sh.j2", recipe_name=plan.recipe.name, recipe_file=str(plan.recipe.path),
                mode=f"native, rank {rank} of {count}", env=env, role="native", ray_start="",
                nodes=count, join_timeout=RAY_JOIN_TIMEOUT, command=command,
                exec_ok=not render.has_operators(command))
        out.append(Role(node, rank, script))
    return out


def native_command(plan: Plan, rank: int, count: int, head_ip: str, port: int) -> str:
    """The command without a Ray backend, plus this node's rank arguments (workers headless)."""
    template_free = render.strip_executor_backend(plan.command)
    extra = ["--nnodes", str(count), "--node-rank", str(rank), "--master-addr", head_ip,
             "--master-port", str(port)] + (["--headless"] if rank else [])
    return render.finish(template_free, extra)


def ray_start(rank: int, ip: str, head_ip: str, port: int) -> str:
    """The `ray start` line of a node, as the origin starts Ray (ports, memory, no dashboard)."""
    common = ["--object-store-memory", RAY_OBJECT_STORE, "--num-cpus", "2", "--disable-usage-stats",
              "--node-ip-address", ip]
    if rank == 0:
        argv = ["ray", "start", "--head", "--port", str(port), "--include-dashboard=false", *common]
    else:
        argv = ["ray", "start", "--block", f"--address={head_ip}:{port}", *common]
    return shlex.join(argv)
