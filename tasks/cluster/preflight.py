"""Check every node before anything is copied or started, and show it as one table.

A cluster run that fails on its third node after copying 35 GB to the first two
wastes the user's hour and leaves half-changed machines. So the facts that decide
whether a run can succeed — SSH works, Docker answers, enough disk where the image
and the weights will land, what GPU and how much memory — are read on all nodes in
parallel first (read-only commands), and any failing node stops the run with the
whole table, so the user sees every problem at once instead of one per attempt.

The parse functions are pure and tested with real `nvidia-smi` output; DGX Spark
(GB10) reports GPU memory as `[N/A]` because it is unified with system RAM, so
memory then comes from /proc/meminfo.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from typing import Mapping, Sequence, Union

from ..connect import Connector, Local
from ..errors import RunError
from ..fanout import each
from ..facts import cache as facts, docker, memory as memory_guard
from ..masking import printable
from ..nodes import Node
from ..sizes import human_bytes

NO_NVIDIA_SMI = 200  # exit code of our probe when nvidia-smi is not installed
DEFAULT_HF_CACHE = "~/.cache/huggingface/hub"
MAX_WORKERS = 16

# bytes this run will put on a node: a total, or (image bytes on the Docker root, weight bytes in the HF cache)
Need = Union[int, tuple[int, int]]


@dataclass(frozen=True)
class Gpu:
    name: str
    memory: int | None  # bytes; None when the GPU shares system memory (unified) or does not say


@dataclass(frozen=True)
class Disk:
    path: str   # the directory asked about
    mount: str  # its filesystem's mount point: two paths on one mount share the free space
    free: int   # bytes available to unprivileged writers (df avail)


@dataclass
class NodeFacts:
    """What preflight learned about one node, and what is wrong with it."""

    node: str
    ssh: str = "ok"                 # "ok", "local", or why SSH failed
    ssh_error: str = ""             # the full message (host key instructions etc.)
    docker_version: str | None = None
    docker_error: str = ""
    nvidia_runtime: bool = False
    docker_disk: Disk | None = None
    hf_disk: Disk | None = None
    gpus: tuple[Gpu, ...] = ()
    gpu_error: str = ""
    mem_total: int | None = None    # /proc/meminfo MemTotal, bytes
    links: frozenset[str] = frozenset()  # network interfaces and RDMA devices, read when the run names some
    links_error: str = ""
    memory: memory_guard.Memory | None = None  # memory now: what the memory guard judges
    needed: Need = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def unified_memory(self) -> bool:
        return bool(self.gpus) and all(g.memory is None for g in self.gpus)

    @property
    def model_memory(self) -> int | None:
        """Memory a model can use: summed GPU memory, or system RAM when it is unified with the GPU."""
        if self.gpus and not self.unified_memory:
            return sum(g.memory or 0 for g in self.gpus)
        return self.mem_total if self.unified_memory else None


# -- pure parsers ---------------------------------------------------------------------------
def parse_gpu_csv(text: str) -> list[Gpu]:
    """GPUs from `nvidia-smi --query-gpu=name,memory.total --format=csv[,noheader][,nounits]`.

    Also reads the full form with a header (any column order, `MiB` units), so a
    saved `--format=csv` file from a user parses the same way.
    """
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    if not lines:
        return []
    name_col, mem_col = 0, 1
    head = [c.strip().lower() for c in lines[0].split(",")]
    if "name" in head:
        name_col = head.index("name")
        mem_col = next(i for i, c in enumerate(head) if c.startswith("memory.total"))
        lines = lines[1:]
    gpus = []
    for line in lines:
        cells = [c.strip() for c in line.split(",")]
        if len(cells) <= max(name_col, mem_col):
            raise ValueError(f"unexpected nvidia-smi line: {line!r}")
        gpus.append(Gpu(cells[name_col], memory_guard.mib(cells[mem_col])))
    return gpus


def parse_meminfo(text: str) -> int:
    """MemTotal from /proc/meminfo, in bytes."""
    total, _ = memory_guard.parse_meminfo(text)
    if total is None:
        raise ValueError("no MemTotal in /proc/meminfo")
    return total


def parse_df(text: str, path: str) -> Disk:
    """`df -B1 --output=avail,target PATH`: header, then `<bytes> <mount point>`."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    avail, mount = lines[-1].strip().split(None, 1)
    return Disk(path, mount.strip(), int(avail))


def parse_links(text: str) -> frozenset[str]:
    """Interface names from /proc/net/dev (`  eth0: 123 ...`) plus `ib/<device>` lines, as given."""
    names = set()
    for line in text.splitlines():
        if line.startswith("ib/"):
            names.add(line.strip())
        elif ":" in line and "|" not in line:
            names.add(line.split(":", 1)[0].strip())
    return frozenset(names)


# -- gathering --------------------------------------------------------------------------------
# One read-only script per node gathers every fact preflight needs in ONE round trip: memory, the
# Docker engine (version, runtimes, data root) and the free space under it, the HF cache's free
# space (of the nearest existing parent: the cache may not exist yet), the GPUs, and with $3=1 the
# interfaces of this network namespace (/sys/class/net shows the mounter's) and the RDMA devices.
# Each part is printed as `@@RR <part> <exit code>` and its output.
_FUNCTIONS = r"""
part() { n=$1; shift; o=$("$@" 2>&1); rc=$?; printf '@@RR %s %s\n%s\n' "$n" "$rc" "$o"; }
df_at() {
  p=$1; case $p in "~") p=$HOME;; "~/"*) p=$HOME/${p#"~/"};; esac
  while [ ! -e "$p" ]; do p=$(dirname -- "$p"); done; df -B1 --output=avail,target -- "$p"
}
gpu() { command -v nvidia-smi >/dev/null 2>&1 || return 200; nvidia-smi "$@"; }
links() { cat /proc/net/dev; for d in /sys/class/infiniband/*; do [ -e "$d" ] && echo "ib/${d##*/}"; done; true; }
# each memory cgroup level from ours up: LIMIT USAGE INACTIVE_FILE PATH (v2, else v1)
cgroup_mem() {
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    r=/sys/fs/cgroup m=memory.max u=memory.current i=inactive_file p=$(sed -n 's/^0:://p' /proc/self/cgroup)
  else
    r=/sys/fs/cgroup/memory m=memory.limit_in_bytes u=memory.usage_in_bytes i=total_inactive_file
    p=$(sed -n 's/^[0-9]*:[^:]*memory[^:]*://p' /proc/self/cgroup)
  fi
  d=$r$p; [ -d "$d" ] || d=$r
  while :; do
    [ -r "$d/$m" ] && echo "$(cat "$d/$m") $(cat "$d/$u" 2>/dev/null || echo 0) $(sed -n "s/^$i //p" "$d/memory.stat" 2>/dev/null || echo 0) $d"
    [ "$d" = "$r" ] || [ "$d" = / ] && break; d=$(dirname -- "$d")
  done; true
}
memory() {
  part cgroup cgroup_mem
  part gpu_free gpu --query-gpu=index,memory.total,memory.free --format=csv,noheader,nounits
  part gpu_apps gpu --query-compute-apps=pid,process_name,used_memory --format=csv,noheader,nounits
  part top sh -c 'ps -eo pid=,rss=,comm= --sort=-rss | head -n 5'
}
"""
MEMORY_SCRIPT = _FUNCTIONS + "part meminfo cat /proc/meminfo\nmemory\n"
GATHER_SCRIPT = _FUNCTIONS + r"""
part meminfo cat /proc/meminfo
part docker docker info --format "$1"
root=$(printf '%s' "$o" | sed -n 's/.*"root":"\([^"]*\)".*/\1/p')
[ -n "$root" ] && part docker_disk df_at "$root"
part hf_disk df_at "$2"
part gpu gpu --query-gpu=name,memory.total --format=csv,noheader,nounits
[ "$3" = 1 ] && part links links
memory
true
"""


def parse_parts(text: str) -> dict[str, tuple[int, str]]:
    """The gather script's output as {part: (exit code, output)}."""
    parts: dict[str, tuple[int, str]] = {}
    for chunk in ("\n" + text).split("\n@@RR ")[1:]:
        head, _, body = chunk.partition("\n")
        name, _, code = head.partition(" ")
        parts[name] = (int(code) if code.strip().lstrip("-").isdigit() else -1, body.rstrip("\n"))
    return parts


def gather(runner: Connector, hf_cache: str = DEFAULT_HF_CACHE, links: bool = False) -> NodeFacts:
    """Read one node's facts in one read-only call; never raises for a node problem.

    `links`: also list its network interfaces and RDMA devices (the run names some to use). The
    engine's facts are kept for the rest of the run (docker.engine_facts asks no more)."""
    found = NodeFacts(runner.node, ssh="local" if isinstance(runner, Local) else "ok")
    try:  # first contact: proves SSH works
        res = runner.read(["sh", "-c", GATHER_SCRIPT, "gather", docker.ENGINE_FORMAT, hf_cache, "1" if links else "0"],
                          timeout=40)
    except RunError as exc:
        first = _first_line(str(exc))
        found.ssh, found.ssh_error = first.split(" over SSH: ", 1)[-1], str(exc)
        return found
    parts = parse_parts(res.stdout)
    code, text = parts.get("meminfo", (1, ""))
    try:
        found.mem_total = parse_meminfo(text) if code == 0 else None
    except ValueError:
        found.mem_total = None  # shown as "?"; a node is not refused for it
    found.memory = memory_facts(parts)
    facts.remember(runner.node, "memory", (), found.memory)
    code, text = parts.get("docker", (1, "no answer"))
    if code == 0 and text.strip():
        engine = json.loads(text.strip().splitlines()[-1])
        facts.remember(runner.node, "docker info", (), engine)
        found.docker_version, found.nvidia_runtime = engine["version"], "nvidia" in (engine.get("runtimes") or {})
        disk = parts.get("docker_disk", (1, ""))
        found.docker_disk = parse_df(disk[1], engine["root"]) if disk[0] == 0 else None
    else:
        found.docker_error = ("docker is not installed" if code == 127 else
                              _first_line(text or "no answer", last=True))
    disk = parts.get("hf_disk", (1, ""))
    found.hf_disk = parse_df(disk[1], hf_cache) if disk[0] == 0 else None
    code, text = parts.get("gpu", (NO_NVIDIA_SMI, ""))
    try:
        if code == 0:
            found.gpus = tuple(parse_gpu_csv(text))
        elif code != NO_NVIDIA_SMI:  # installed but no driver/GPU: worth showing
            found.gpu_error = _first_line(text or f"nvidia-smi exited {code}")
    except ValueError as exc:
        found.gpu_error = _first_line(str(exc))
    if links:
        code, text = parts.get("links", (1, "not listed"))
        if code == 0:
            found.links = parse_links(text)
        else:
            found.links_error = _first_line(text)
    return found


def memory_facts(parts: dict[str, tuple[int, str]]) -> memory_guard.Memory:
    """The memory parts of a gathering (MEMORY_SCRIPT's or GATHER_SCRIPT's output) as facts."""
    def text(name: str) -> str:
        code, out = parts.get(name, (1, ""))
        return out if code == 0 else ""

    total, available = memory_guard.parse_meminfo(text("meminfo"))
    return memory_guard.Memory(total, available, memory_guard.parse_cgroup(text("cgroup")),
                               memory_guard.parse_gpu_free(text("gpu_free")),
                               memory_guard.parse_holders(text("gpu_apps"), text("top")))


def read_memory(runner: Connector) -> memory_guard.Memory:
    """One node's memory now, asked once per run unless preflight's gathering told it already (a
    command that changes the node, like removing a container, makes it be asked again)."""
    return facts.fact(runner.node, "memory", (), lambda: memory_facts(
        parse_parts(runner.read(["sh", "-c", MEMORY_SCRIPT, "memory"], timeout=30).stdout)))


def _df(runner: Connector, path: str) -> Disk:
    res = runner.read(["sh", "-c", _FUNCTIONS + 'df_at "$1"', "sh", path], timeout=20)
    return parse_df(res.stdout, path)


def check_room(runners: Sequence[Connector], need: int, what: str) -> None:
    """Each node's Docker disk has room for `need` bytes, else a RunError naming every short node.

    For a copy whose size preflight could not know: the first run builds the image after it."""
    def free(runner: Connector) -> Disk:
        return _df(runner, docker.engine_facts(runner)["root"])

    disks = each(free, runners, workers=MAX_WORKERS)
    short = [(r.node, d) for r, d in zip(runners, disks) if d.free < need]
    if short:
        raise RunError(f"not enough disk for {what} ({human_bytes(need)}); nothing was copied: "
                       + "; ".join(f"{node} has {human_bytes(d.free)} free on {d.mount}" for node, d in short),
                       node=short[0][0])


def judge(facts: NodeFacts, need: Need = 0, *, require_gpu: bool = False, interfaces: Sequence[str] = (),
          hcas: Sequence[str] = ()) -> NodeFacts:
    """Fill `facts.problems`: what stops this node from taking part in the run.

    `interfaces` / `hcas`: what the user named for NCCL (--eth-if, --ib-if); a name a node lacks
    would only show up as a hang or a slow fallback once vLLM starts."""
    facts.needed, problems = need, []
    if facts.ssh_error:
        problems.append("SSH failed")
    elif facts.docker_version is None:
        problems.append("Docker not reachable")
    else:
        for disk, want in _disk_needs(facts, need):
            if want > disk.free:
                problems.append(f"needs {human_bytes(want)} on {disk.mount}, {human_bytes(disk.free)} free")
    if facts.links_error:
        problems.append(f"cannot list network interfaces: {facts.links_error}")
    elif not facts.ssh_error:
        problems += [f"no network interface '{name}' (--eth-if / ETH_IF)" for name in interfaces
                     if name not in facts.links]
        problems += [f"no InfiniBand/RoCE device '{name}' (--ib-if / IB_IF)" for name in hcas
                     if f"ib/{name}" not in facts.links]
    if require_gpu and not facts.ssh_error:
        if not facts.gpus:
            problems.append("no NVIDIA GPU")
        elif facts.docker_version and not facts.nvidia_runtime:
            problems.append("Docker has no nvidia runtime (install nvidia-container-toolkit)")
    facts.problems = problems
    return facts


def _disk_needs(facts: NodeFacts, need: Need) -> list[tuple[Disk, int]]:
    """Bytes wanted per filesystem; two paths on one mount add up."""
    image, weights = (need, need) if isinstance(need, int) else need
    disks = [(d, w) for d, w in ((facts.docker_disk, image), (facts.hf_disk, weights)) if d is not None]
    if isinstance(need, int):  # only a total is known: it must fit on each filesystem it may land on
        return list({d.mount: (d, w) for d, w in disks}.values())
    merged: dict[str, tuple[Disk, int]] = {}
    for d, w in disks:
        merged[d.mount] = (d, merged[d.mount][1] + w) if d.mount in merged else (d, w)
    return list(merged.values())


def preflight(nodes: Sequence[Node], runners: Mapping[str, Connector] | Sequence[Connector],
              bytes_needed: Mapping[str, Need], *, hf_cache: str = DEFAULT_HF_CACHE,
              require_gpu: bool = False, interfaces: Sequence[str] = (), hcas: Sequence[str] = (),
              max_workers: int = MAX_WORKERS) -> list[NodeFacts]:
    """Gather and judge every node in parallel; raise RunError(table) if any node fails.

    `runners` is keyed by `node.target` (or given in the order of `nodes`);
    `bytes_needed[node.target]` is what this run will copy there; every node must have the
    `interfaces` and `hcas` the user named.
    """
    if not nodes:
        return []
    pick = (lambda i, n: runners[n.target]) if isinstance(runners, Mapping) else (lambda i, n: runners[i])
    todo = [pick(i, n) for i, n in enumerate(nodes)]
    gathered = each(lambda r: gather(r, hf_cache, links=bool(interfaces or hcas)), todo, workers=max_workers,
                    name="preflight")
    facts = [judge(f, bytes_needed.get(n.target, 0), require_gpu=require_gpu, interfaces=interfaces, hcas=hcas)
             for n, f in zip(nodes, gathered)]
    if any(not f.ok for f in facts):
        raise RunError("preflight failed: nothing was changed on any node\n" + render(facts))
    return facts


# -- the table ----------------------------------------------------------------------------
def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / (1 << 30):.1f} GiB"


def render(facts: Sequence[NodeFacts], width: int = 240) -> str:
    """The preflight table as plain text (for the terminal and for error messages)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from rich.text import Text

    table = Table(box=box.SIMPLE_HEAVY, show_lines=False)
    for col in ("node", "ssh", "docker", "disk free / needed", "GPU", "memory", "verdict"):
        table.add_column(col, overflow="fold")
    for f in facts:  # a node's answers are its own text: literal cells, no markup, no escape sequences
        table.add_row(*(Text(printable(cell)) for cell in (
            f.node, f.ssh, _docker_cell(f), _disk_cell(f), _gpu_cell(f), _memory_cell(f),
            "ok" if f.ok else "FAIL: " + "; ".join(f.problems))))
    out = io.StringIO()
    Console(file=out, width=width, color_system=None, highlight=False, emoji=False, markup=False).print(table)
    text = "\n".join(ln.rstrip() for ln in out.getvalue().splitlines()).strip("\n") + "\n"
    details = [f"{f.node}: {f.ssh_error}" for f in facts if f.ssh_error and "\n" in f.ssh_error]
    return text + ("\n" + "\n".join(details) + "\n" if details else "")


def _docker_cell(f: NodeFacts) -> str:
    if f.ssh_error:
        return "-"
    if f.docker_version is None:
        return f"not reachable: {f.docker_error}"
    return f.docker_version + (" +nvidia" if f.nvidia_runtime else "")


def _disk_cell(f: NodeFacts) -> str:
    if f.ssh_error:
        return "-"
    seen, lines = set(), []
    for disk in (f.docker_disk, f.hf_disk):
        if disk is not None and disk.mount not in seen:
            seen.add(disk.mount)
            lines.append(f"{human_bytes(disk.free)} on {disk.mount}")
    need = f.needed if isinstance(f.needed, int) else sum(f.needed)
    return ", ".join(lines or ["?"]) + f" (need {human_bytes(need)})"


def _gpu_cell(f: NodeFacts) -> str:
    if f.ssh_error:
        return "-"
    if not f.gpus:
        return f"none ({f.gpu_error})" if f.gpu_error else "none"
    names = sorted({g.name for g in f.gpus})
    return f"{len(f.gpus)} x {', '.join(names)}"


def _memory_cell(f: NodeFacts) -> str:
    if f.ssh_error:
        return "-"
    if f.gpus and not f.unified_memory:
        return f"{_gib(f.model_memory)} GPU"
    if f.unified_memory:
        return f"{_gib(f.mem_total)} unified"
    return f"{_gib(f.mem_total)} RAM"


def _first_line(text: str, last: bool = False) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()] or ["?"]
    return lines[-1] if last else lines[0]

