"""Will the server fit in memory now? Pure functions over one node's memory facts.

A recipe that exhausts unified memory can take the whole machine down, and memory another process
still holds makes vLLM fail minutes into its start. vLLM asks for `gpu_memory_utilization` (default
0.9) of each GPU's total memory and refuses to start when less is free; on unified memory (DGX
Spark: nvidia-smi reports no GPU memory of its own) that total is the system's, shared with every
other process, so what is free is the kernel's MemAvailable — and no more than the cgroup the node
runs in still allows. vLLM's CPU build (a recipe built with --cpu) is judged against system RAM
whatever GPUs the node has: there `--gpu-memory-utilization` is a share of the RAM, unless a KV cache
size is set, which must then be available. The facts are gathered by tasks/cluster/preflight.py (same call as
the other facts).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..sizes import human_bytes

DEFAULT_FRACTION = 0.9  # vLLM's --gpu-memory-utilization default
UNLIMITED = 1 << 60     # a cgroup limit at or above this is "no limit" (v1 writes 2^63 rounded to pages)
CPU_NOTE = "CPU image: no GPU needed; memory checked against system RAM"


@dataclass(frozen=True)
class GpuMemory:
    index: int
    total: int | None  # bytes; None on unified memory
    free: int | None


@dataclass(frozen=True)
class Holder:
    """A process holding memory: a GPU compute process (nvidia-smi) or, failing that, a large one (ps)."""

    pid: int
    name: str
    bytes: int | None


@dataclass(frozen=True)
class Memory:
    """One node's memory now."""

    total: int | None = None        # MemTotal
    available: int | None = None    # MemAvailable
    cgroup_room: int | None = None  # the tightest cgroup level's limit - (usage - inactive file); None: no limit
    gpus: tuple[GpuMemory, ...] = ()
    holders: tuple[Holder, ...] = ()

    @property
    def unified(self) -> bool:
        return bool(self.gpus) and all(g.total is None for g in self.gpus)

    @property
    def system_room(self) -> int | None:
        """System memory a new process may still take: MemAvailable, capped by the cgroup."""
        known = [n for n in (self.available, self.cgroup_room) if n is not None]
        return min(known) if known else None


@dataclass(frozen=True)
class Verdict:
    """Whether a server taking `fraction` of memory fits on a node now, with the numbers."""

    node: str
    fits: bool | None  # None: not judged (no GPU, or the facts are missing)
    need: int = 0
    room: int = 0
    basis: str = ""    # what `need` and `room` are, in words
    holders: tuple[Holder, ...] = ()

    def message(self) -> str:
        if self.fits is None:
            return f"{self.node}: memory not judged ({self.basis})"
        line = (f"{self.node}: needs {human_bytes(self.need)}, {human_bytes(self.room)} available "
                f"({self.basis})")
        return line + (f"; held by {held_by(self.holders)}" if self.holders and not self.fits else "")


def judge(node: str, memory: Memory, fraction: float = DEFAULT_FRACTION, *, cpu: bool = False,
          kv_bytes: int | None = None) -> Verdict:
    """Need vs room on one node: per GPU on discrete GPUs (the tightest one decides), system memory
    on unified memory. `cpu`: vLLM's CPU build, against system RAM: the KV cache size it is given
    (`kv_bytes`) must be available, else it reserves `fraction` of the RAM as vLLM's CPU worker does."""
    if cpu and kv_bytes is not None:
        return _against_ram(node, memory, kv_bytes, f"CPU image: its {human_bytes(kv_bytes)} KV cache (the weights "
                            "come on top)")
    if not memory.gpus and not cpu:
        return Verdict(node, None, basis="no NVIDIA GPU")
    if memory.unified or cpu:
        if memory.total is None:
            return Verdict(node, None, basis="MemTotal/MemAvailable not readable")
        kind = "RAM (CPU image)" if cpu else "unified memory"
        return _against_ram(node, memory, int(fraction * memory.total),
                            f"{fraction:g} x {human_bytes(memory.total)} {kind}")
    short = [(int(fraction * g.total) - g.free, g) for g in memory.gpus if g.total is not None and g.free is not None]
    if not short:
        return Verdict(node, None, basis="GPU free memory not reported")
    _, gpu = max(short, key=lambda pair: pair[0])
    need = int(fraction * (gpu.total or 0))
    return Verdict(node, (gpu.free or 0) >= need, need, gpu.free or 0,
                   f"{fraction:g} x {human_bytes(gpu.total or 0)} of GPU {gpu.index}; available = its free memory",
                   memory.holders)


def _against_ram(node: str, memory: Memory, need: int, what: str) -> Verdict:
    """`need` bytes against the system memory a new process may take (MemAvailable, capped by the cgroup)."""
    room = memory.system_room
    if room is None:
        return Verdict(node, None, basis="MemTotal/MemAvailable not readable")
    capped = memory.cgroup_room is not None and memory.cgroup_room < (memory.available or 0)
    basis = f"{what}; available = " + ("the cgroup's limit minus its usage" if capped else "MemAvailable")
    return Verdict(node, room >= need, need, room, basis, memory.holders)


def room(memory: Memory) -> int | None:
    """What a new server may take now: system room on unified memory (or no GPU), else the tightest GPU's free memory."""
    frees = [g.free for g in memory.gpus if g.free is not None]
    return min(frees) if frees and not memory.unified else memory.system_room


def released(memory: Memory, need: int) -> bool:
    """After a stop: is the memory a relaunch needs back? (Nothing to wait for when it is not reported.)"""
    free = room(memory)
    return free is None or free >= need


def held_by(holders: tuple[Holder, ...]) -> str:
    return ", ".join(f"{h.name} (pid {h.pid}" + (f", {human_bytes(h.bytes)})" if h.bytes else ")")
                     for h in holders[:5])


def refusal(verdicts: list[Verdict]) -> str:
    """The message for a launch that does not fit, one line per short node, and how to go on."""
    short = [v for v in verdicts if v.fits is False]
    return ("the server does not fit in memory now; nothing was started:\n"
            + "\n".join(f"  {v.message()}" for v in short)
            + "\nFree the memory (stop what holds it), lower --gpu-mem, or start anyway with --force")


# -- parsers of the gathered text ---------------------------------------------------------------
def parse_meminfo(text: str) -> tuple[int | None, int | None]:
    """(MemTotal, MemAvailable) in bytes from /proc/meminfo."""
    found: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        words = rest.split()
        if key in ("MemTotal", "MemAvailable") and words and words[0].isdigit():
            found[key] = int(words[0]) * 1024  # the kernel writes kB = KiB
    return found.get("MemTotal"), found.get("MemAvailable")


def parse_cgroup(text: str) -> int | None:
    """Room left under the tightest memory cgroup level, from lines `LIMIT USAGE INACTIVE_FILE PATH`
    (one per level, v1 or v2; `max` or a huge number is no limit). Page cache that can be dropped
    (inactive file) counts as room, as the kernel reclaims it before it refuses memory."""
    rooms = []
    for line in text.splitlines():
        words = line.split()
        if len(words) < 3 or not words[1].isdigit():
            continue
        limit = UNLIMITED if words[0] == "max" or not words[0].isdigit() else int(words[0])
        if limit >= UNLIMITED:
            continue
        inactive = int(words[2]) if words[2].isdigit() else 0
        rooms.append(max(0, limit - max(0, int(words[1]) - inactive)))
    return min(rooms) if rooms else None


def parse_gpu_free(text: str) -> tuple[GpuMemory, ...]:
    """`nvidia-smi --query-gpu=index,memory.total,memory.free --format=csv,noheader,nounits` (MiB; `[N/A]` on unified)."""
    gpus = []
    for line in text.strip().splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) >= 3 and cells[0].isdigit():
            gpus.append(GpuMemory(int(cells[0]), mib(cells[1]), mib(cells[2])))
    return tuple(gpus)


def parse_holders(gpu_apps: str, ps: str) -> tuple[Holder, ...]:
    """GPU compute processes (`--query-compute-apps=pid,process_name,used_memory`, MiB), largest first;
    when there are none (or nvidia-smi cannot tell, as on unified memory), the largest processes by
    resident memory from `ps -eo pid=,rss=,comm=` (KiB)."""
    apps = []
    for line in gpu_apps.strip().splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) >= 3 and cells[0].isdigit():
            apps.append(Holder(int(cells[0]), cells[1].rsplit("/", 1)[-1], mib(cells[2])))
    if apps and any(a.bytes for a in apps):
        return tuple(sorted(apps, key=lambda h: -(h.bytes or 0)))
    procs = []
    for line in ps.strip().splitlines():
        words = line.split(None, 2)
        if len(words) == 3 and words[0].isdigit() and words[1].isdigit():
            procs.append(Holder(int(words[0]), words[2].strip(), int(words[1]) * 1024))
    return tuple(sorted(procs, key=lambda h: -(h.bytes or 0))[:5]) or tuple(apps)


def mib(cell: str) -> int | None:
    """Bytes from an nvidia-smi MiB cell (`143771` or `143771 MiB`); None for `[N/A]` and the like."""
    value = cell.strip().removesuffix("MiB").strip()
    try:
        return int(float(value) * (1 << 20))
    except ValueError:
        return None  # [N/A], [Not Supported]

