"""The memory guard over facts: real nvidia-smi output (H200), a DGX Spark's unified memory, and a
node whose memory is capped by a real cgroup."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tasks.facts import memory as mg
from tasks.cluster import preflight

FIX = Path(__file__).parent / "fixtures" / "nvidia-smi"
GiB = 1 << 30
H200_FREE = (FIX / "h200" / "query-gpu.csv").read_text().splitlines()[2]  # index, memory.total, memory.free


def test_discrete_gpu_fits_or_is_refused_with_numbers() -> None:
    gpus = mg.parse_gpu_free(H200_FREE)
    assert gpus == (mg.GpuMemory(0, 143771 << 20, 143156 << 20),)
    memory = mg.Memory(gpus=gpus)
    assert mg.judge("h200", memory, 0.9).fits is True
    busy = mg.Memory(gpus=(mg.GpuMemory(0, 143771 << 20, 40 * GiB),),
                     holders=mg.parse_holders("4242, /usr/bin/python3, 100000\n", ""))
    verdict = mg.judge("h200", busy, 0.9)
    assert verdict.fits is False and verdict.need == int(0.9 * (143771 << 20)) and verdict.room == 40 * GiB
    text = mg.refusal([verdict, mg.judge("other", memory, 0.9)])
    assert "h200: needs 135.7 GB, 42.9 GB available (0.9 x 150.8 GB of GPU 0" in text
    assert "python3 (pid 4242, 104.9 GB)" in text and "other" not in text and "--force" in text


def test_the_tightest_of_several_gpus_decides() -> None:
    memory = mg.Memory(gpus=mg.parse_gpu_free("0, 81559, 80000\n1, 81559, 10000\n"))
    verdict = mg.judge("n", memory, 0.5)
    assert verdict.fits is False and "GPU 1" in verdict.basis


def test_unified_memory_uses_memavailable_of_the_spark() -> None:
    total, available = mg.parse_meminfo((FIX / "gb10" / "meminfo").read_text())
    gpus = mg.parse_gpu_free("0, [N/A], [N/A]\n")
    spark = mg.Memory(total, available, None, gpus)
    assert spark.unified and mg.judge("spark", spark, 0.9).fits is True
    crowded = mg.Memory(total, 40 * GiB, None, gpus, mg.parse_holders("", "777 31457280 python3\n12 2048 sshd\n"))
    verdict = mg.judge("spark", crowded, 0.9)
    assert verdict.fits is False and verdict.room == 40 * GiB and "MemAvailable" in verdict.basis
    assert "held by python3 (pid 777, 32.2 GB), sshd (pid 12" in verdict.message()
    assert mg.released(crowded, 30 * GiB) and not mg.released(crowded, 50 * GiB)


def test_no_gpu_is_not_judged_and_needs_no_wait() -> None:
    verdict = mg.judge("cpu", mg.Memory(1 << 34, 1 << 33), 0.9)
    assert verdict.fits is None and "no NVIDIA GPU" in verdict.message()


def test_a_cpu_image_is_judged_against_system_ram_whatever_gpus_the_node_has() -> None:
    """vLLM's CPU worker reserves --gpu-memory-utilization of the RAM, unless a KV cache size is set."""
    box = mg.Memory(16 * GiB, 10 * GiB, holders=mg.parse_holders("", "777 3145728 python3\n"))
    share = mg.judge("box", box, 0.5, cpu=True)
    assert (share.fits, share.need, share.room) == (True, 8 * GiB, 10 * GiB)
    assert share.message() == ("box: needs 8.6 GB, 10.7 GB available (0.5 x 17.2 GB RAM (CPU image); "
                               "available = MemAvailable)")
    refused = mg.judge("box", box, 0.9, cpu=True)
    assert refused.fits is False and "held by python3 (pid 777" in mg.refusal([refused])
    kv = mg.judge("box", box, 0.9, cpu=True, kv_bytes=GiB)
    assert (kv.fits, kv.need, kv.room) == (True, GiB, 10 * GiB) and "its 1.1 GB KV cache" in kv.basis
    on_gpus = mg.Memory(16 * GiB, 10 * GiB, None, mg.parse_gpu_free(H200_FREE))  # the GPUs do not count
    assert mg.judge("gpus", on_gpus, 0.5, cpu=True).basis == share.basis
    assert mg.judge("box", mg.Memory(), 0.5, cpu=True).fits is None


def test_the_cpu_kv_cache_size_is_read_as_vllms_cpu_platform_reads_it(tmp_path: Path) -> None:
    from tasks.ops.memory_check import cpu_kv_bytes
    from tasks.plan import Options, make_plan
    from tasks.recipe import load_named

    def kv(env: str = "", tail: str = "", *docker_env: str, image: str = "") -> int | None:
        from tasks.container_flags import make

        path = tmp_path / "r.yaml"
        path.write_text(f"recipe_version: '1'\nname: r\ncontainer: c\nbuild_args: [--cpu]\nenv: {{{env}}}\n"
                        f"command: vllm serve org/m {tail}\n")
        plan = make_plan(load_named(str(path), tmp_path), Options(solo=True, docker=make(env=docker_env)))
        return cpu_kv_bytes(plan, {"PATH": "/bin", "VLLM_CPU_KVCACHE_SPACE": image} if image else {})

    assert kv() is None and kv("VLLM_CPU_KVCACHE_SPACE: 'x'") is None
    assert kv("VLLM_CPU_KVCACHE_SPACE: 2") == 2 * GiB == kv("", "", "VLLM_CPU_KVCACHE_SPACE=2") == kv(image="2")
    assert kv("VLLM_CPU_KVCACHE_SPACE: 3", "", "VLLM_CPU_KVCACHE_SPACE=2") == 3 * GiB  # the script exports it last
    assert kv("", "", "VLLM_CPU_KVCACHE_SPACE=1", image="4") == GiB  # -e wins over the image's ENV
    assert kv("VLLM_CPU_KVCACHE_SPACE: 1", "--kv-cache-memory-bytes 5G") == GiB
    assert kv("", "--kv-cache-memory-bytes 5G") == 5 * GiB and kv("", "--kv-cache-memory-bytes 1.5g") == 1_500_000_000


def test_cgroup_levels_the_tightest_counts_and_page_cache_is_room() -> None:
    text = ("9223372036854771712 43937792 1490944 /sys/fs/cgroup/memory/a/b\n"
            "1073741824 805306368 268435456 /sys/fs/cgroup/memory/a\n"
            "max 5 0 /sys/fs/cgroup\n")
    assert mg.parse_cgroup(text) == 1073741824 - (805306368 - 268435456)
    assert mg.parse_cgroup("max 123 0 /sys/fs/cgroup\n") is None


CGROUP_V1 = Path("/sys/fs/cgroup/memory")


@pytest.mark.skipif(os.geteuid() != 0 or not (CGROUP_V1 / "cgroup.procs").exists()
                    and not Path("/sys/fs/cgroup/cgroup.controllers").exists(), reason="needs root and a memory cgroup")
def test_a_node_capped_by_a_cgroup_has_only_the_cap_available(tmp_path: Path) -> None:
    """The gathering script, run in a real memory cgroup capped at 256 MiB, reports the cap as the
    room, and a unified-memory server asking 0.5 of MemTotal is refused because of it."""
    v2 = Path("/sys/fs/cgroup/cgroup.controllers").exists()
    group = (Path("/sys/fs/cgroup") if v2 else CGROUP_V1) / f"runrecipe-test-memcap-{os.getpid()}"
    group.mkdir()
    try:
        (group / ("memory.max" if v2 else "memory.limit_in_bytes")).write_text(str(256 << 20))
        run = subprocess.run(["sh", "-c", 'echo $$ > "$0/cgroup.procs" && exec sh -c "$1" memory',
                              str(group), preflight.MEMORY_SCRIPT], capture_output=True, text=True, timeout=30)
        memory = preflight.memory_facts(preflight.parse_parts(run.stdout))
    finally:
        subprocess.run(["sh", "-c", 'sleep 0.2; rmdir "$0"', str(group)], check=False)
    assert memory.cgroup_room is not None and 0 < memory.cgroup_room <= 256 << 20
    assert memory.total and memory.available and memory.system_room == memory.cgroup_room
    unified = mg.Memory(memory.total, memory.available, memory.cgroup_room, mg.parse_gpu_free("0, [N/A], [N/A]"))
    verdict = mg.judge("capped", unified, 0.5)
    assert verdict.fits is False and verdict.room == memory.cgroup_room
    assert "the cgroup's limit minus its usage" in verdict.basis


def test_waiting_for_memory_after_a_stop_reads_this_machine() -> None:
    from tasks.ops.memory_check import wait_released
    from tasks.connect import Local

    assert wait_released(Local(), 1 << 20, timeout=0) is None
    left = wait_released(Local(), 1 << 62, timeout=0.3, poll=0.1)
    assert left is not None and left.holders and left.holders[0].bytes


def test_stop_waits_on_every_node_at_once_and_names_who_holds_memory(tmp_path, monkeypatch, capsys) -> None:
    """Two nodes that never free what their launch needed: both are waited on side by side (one wait,
    not two) and each gets its warning with the holders."""
    import time

    from tasks.serve import lifecycle
    from tasks.ops import run_record
    from tasks.connect import Local

    monkeypatch.setenv("RUNRECIPE_HOME", str(tmp_path))
    a, b = Local(), Local()
    b.node = "local-b"
    run_record.save("r", {"recipe": "r", "nodes": [{"node": a.node, "memory_need": 10 ** 12},
                                                      {"node": b.node, "memory_need": 10 ** 12}]})
    started = time.monotonic()
    lifecycle.wait_memory([a, b], "r", timeout=1.0)
    took = time.monotonic() - started
    err = capsys.readouterr().err
    assert f"Warning: {a.node}: 1.0 TB of memory not free again after 1 s" in err, err
    assert "Warning: local-b: " in err and "held by " in err
    assert took < 1.9, f"the nodes were waited on one after the other ({took:.1f} s)"
