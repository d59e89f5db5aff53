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
from typing import TYPE_CHECKING, Any, Mapping

from .. import render
from ..connect import Ssh, SshLink, SshSettings, head_first, link_to, peer_link_to
from ..connect.chain import Worker
from ..errors import ConfigError
from ..fanout import each
from ..interfaces import DEFAULT_MASTER_PORT
from ..nodes import Node, is_local_address, resolve
from ..plan import Plan, check_bash
from ..vllm_args import EXECUTOR, Command

if TYPE_CHECKING:
    from ..connect import Connector

RAY_OBJECT_STORE = "1073741824"
RAY_JOIN_TIMEOUT = 600


@dataclass(frozen=True)
class Placement:
    """One container of a run: the node it runs on (through its runner) and the script it runs."""

    runner: "Connector"
    script: str
    rank: int = 0


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


def backend(ray: bool) -> str:
    """Native unless --ray, whatever executor the recipe names (the origin's default since 2026-07):
    native removes the flag, Ray sets it to `ray`, so a recipe's value never picks the mode."""
    return "ray" if ray else "native"


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
    """One Role per node, head first; each with the script its container runs, checked with `bash -n`."""
    head_ip = net.ips[plan.head.target]
    count = len(plan.nodes)
    out = []
    for rank, node in enumerate(plan.nodes):
        if mode == "ray":
            command = ray_command(plan.vllm)
            label, role = f"ray, node {rank + 1} of {count}", "ray-head" if rank == 0 else "ray-worker"
            start = ray_start(rank, net.ips[node.target], head_ip, net.master_port)
        else:
            command = native_command(plan.vllm, rank, count, head_ip, net.master_port)
            label, role, start = f"native, rank {rank} of {count}", "native", ""
        script = render.render_template(
            "cluster-node.sh.j2", recipe_name=plan.recipe.name, recipe_file=str(plan.recipe.path), mode=label,
            env=node_env(plan, node, net), role=role, ray_start=start, nodes=count,
            join_timeout=RAY_JOIN_TIMEOUT, command=command.text(), exec_ok=not command.has_operators)
        check_bash(script, plan.recipe.path, f"the script of node {node.target} ({label})")
        out.append(Role(node, rank, script))
    return out


def preview(plan: Plan) -> tuple[str, list[Role], list[str]]:
    """(mode, each node's Role, notes): what a run would start where, worked out without contacting any
    node, for --dry-run. Addresses are as this machine resolves them; the interface and HCAs only
    when --eth-if / --ib-if (or .env) name them, since a run reads them from the head."""
    opts, notes, ips = plan.options, [], {}
    for node in plan.nodes:
        try:
            ips[node.target] = resolve(node)
        except ConfigError as exc:
            ips[node.target] = node.host
            notes.append(f"{exc}: shown by name")
    if not opts.eth_if:
        notes.append("interface for NCCL/Gloo/UCX: the one the head routes to the first worker through, read at "
                     "run time (--eth-if or .env ETH_IF names one)")
    if not opts.ib_if:
        notes.append("NCCL_IB_HCA: the head's `ibdev2netdev` ports that are up, read at run time (--ib-if or "
                     ".env IB_IF names them)")
    mode = backend(opts.ray)
    return mode, roles(plan, mode, Network(ips, opts.eth_if, opts.ib_if, opts.master_port)), notes


def ray_command(vllm: Command) -> Command:
    """The command with `--distributed-executor-backend ray` (whatever value the recipe gave)."""
    return vllm if vllm.option(EXECUTOR) == "ray" else vllm.with_option(EXECUTOR, "ray")


def native_command(vllm: Command, rank: int, count: int, head_ip: str, port: int) -> Command:
    """The command without an executor backend, plus this node's rank arguments (workers headless)."""
    extra = ["--nnodes", str(count), "--node-rank", str(rank), "--master-addr", head_ip,
             "--master-port", str(port)] + (["--headless"] if rank else [])
    return vllm.without(EXECUTOR).with_args(extra)


def ray_start(rank: int, ip: str, head_ip: str, port: int) -> str:
    """The `ray start` line of a node, as the origin starts Ray (ports, memory, no dashboard)."""
    common = ["--object-store-memory", RAY_OBJECT_STORE, "--num-cpus", "2", "--disable-usage-stats",
              "--node-ip-address", ip]
    if rank == 0:
        argv = ["ray", "start", "--head", "--port", str(port), "--include-dashboard=false", *common]
    else:
        argv = ["ray", "start", "--block", f"--address={head_ip}:{port}", *common]
    return shlex.join(argv)


class Fleet:
    """The nodes of one cluster run with their runners; network facts are gathered once, when first needed.

    The head is the machine running the tool (as with the origin): it builds, downloads and serves;
    workers are reached over SSH with verified host keys.
    """

    def __init__(self, plan: Plan, settings: SshSettings, mode: str, check_head: bool = True) -> None:
        self.plan, self.settings, self.mode = plan, settings, mode
        self.ips = {n.target: resolve(n) for n in plan.nodes}
        head_ip = self.ips[plan.head.target]
        if check_head and not is_local_address(head_ip):
            raise ConfigError(f"the first node ({plan.head.target}, {head_ip}) is the head and must be this "
                              "machine: run run-recipe on the head, or list this machine first in -n/CLUSTER_NODES")
        self.runners: list[Connector] = head_first(plan.nodes, settings)
        self._net: Network | None = None
        self._places: list[Any] | None = None
        self._routes: dict[str, Node | None] | None = None

    @property
    def workers(self) -> list[tuple[Node, "Connector"]]:
        return list(zip(self.plan.nodes[1:], self.runners[1:]))

    def link(self, node: Node) -> SshLink:
        """How pipelines on the head (copies, weights checks) reach `node`."""
        return link_to(node, self.settings)

    def copy_route(self, node: Node) -> Node | None:
        """Where this worker's image and weights are copied to: the worker itself, its COPY_HOSTS entry
        (matched by docker engine ID: the same machine on another address), or None when COPY_HOSTS
        leaves it out. Asks the nodes only when COPY_HOSTS is set, once per run."""
        if self.plan.copy_hosts is None:
            return node
        if self._routes is None:
            hosts = list(self.plan.copy_hosts)
            asked = [Ssh(h, self.settings) for h in hosts]  # copies go over OpenSSH, not these
            try:
                ids = each(engine_id, [r for _, r in self.workers] + asked)
            finally:
                for runner in asked:
                    runner.close()
            targets = [n.target for n, _ in self.workers]
            self._routes = pair_copy_hosts(dict(zip(targets, ids)), list(zip(hosts, ids[len(targets):])),
                                           engine_id(self.runners[0]))
        return self._routes[node.target]

    def copy_workers(self) -> list[Worker]:
        """Every worker a copy can go to, in chain order, each at its copy address (copy_route)."""
        routes = [self.copy_route(node) for node, _ in self.workers]
        return [Worker(node.target, self.link(route), peer=peer_link_to(route))
                for (node, _), route in zip(self.workers, routes) if route is not None]

    def network(self) -> Network:
        if self._net is None:
            opts = self.plan.options
            head = self.runners[0]
            first_worker = self.ips[self.plan.nodes[1].target]
            eth = opts.eth_if or route_interface(head, first_worker)
            ib = opts.ib_if or infiniband_hcas(head)
            self._net = Network(self.ips, eth, ib, opts.master_port)
        return self._net

    def placements(self) -> list[Any]:
        if self._places is None:
            self._places = [Placement(self.runners[r.rank], r.script, r.rank)
                            for r in roles(self.plan, self.mode, self.network())]
        return self._places


def engine_id(runner: "Connector") -> str:
    """The docker engine's ID: one per machine, whatever address reached it."""
    return runner.read(["docker", "info", "--format", "{{.ID}}"]).stdout.strip()


def pair_copy_hosts(worker_ids: dict[str, str], hosts: list[tuple[Node, str]],
                    head_id: str) -> dict[str, Node | None]:
    """worker target -> the COPY_HOSTS entry on the same machine (same engine ID), or None.

    `worker_ids` maps each worker's target to its engine ID. An entry that is the head is skipped
    (nothing to copy there); one that is no node of the cluster is a configuration error, named."""
    by_id = {i: n for n, i in hosts}
    for host, i in hosts:
        if i != head_id and i not in worker_ids.values():
            raise ConfigError(f"COPY_HOSTS entry '{host.target}' reaches a docker engine that belongs to no node of "
                              f"the cluster ({', '.join(sorted(worker_ids))}): fix or remove the entry in .env")
    return {target: by_id.get(i) for target, i in worker_ids.items()}


def route_interface(runner: "Connector", ip: str) -> str:
    """The interface this node uses to reach `ip` (`ip -o route get`)."""
    res = runner.read(["ip", "-o", "route", "get", ip], check=False)
    words = res.stdout.split()
    return words[words.index("dev") + 1] if res.ok and "dev" in words else ""


def infiniband_hcas(runner: "Connector") -> str:
    """HCAs whose port is up, from `ibdev2netdev` (Mellanox/ConnectX); empty without InfiniBand/RoCE."""
    res = runner.read(["sh", "-c", "command -v ibdev2netdev >/dev/null && ibdev2netdev || true"], check=False)
    hcas = [line.split()[0] for line in res.stdout.splitlines() if "(Up)" in line and line.split()]
    return ",".join(dict.fromkeys(hcas))

