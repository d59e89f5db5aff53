"""Preflight's parsers and verdicts on real H200 output and a written GB10 (unified memory) fixture."""
from __future__ import annotations

from pathlib import Path

import pytest

from tasks.cluster import preflight as pf
from tasks.errors import RunError
from tasks.nodes import Node
from tasks.connect import Result

FIX = Path(__file__).parent / "fixtures" / "nvidia-smi"
MiB, GiB = 1 << 20, 1 << 30


def test_h200_full_csv_with_header_and_units() -> None:
    first_query = "\n".join((FIX / "h200" / "query-gpu.csv").read_text().splitlines()[:2])
    assert pf.parse_gpu_csv(first_query) == [pf.Gpu("NVIDIA H200", 143771 * MiB)]


def test_h200_the_query_preflight_runs() -> None:
    gpus = pf.parse_gpu_csv((FIX / "h200" / "query-name-memory.csv").read_text())
    assert gpus == [pf.Gpu("NVIDIA H200", 143771 * MiB)]
    name = (FIX / "h200" / "nvidia-smi-L.txt").read_text().split(": ", 1)[1].split(" (UUID")[0]
    assert gpus[0].name == name


@pytest.mark.parametrize("file", ["query-name-memory.csv", "query-gpu.csv"])
def test_gb10_memory_not_reported(file: str) -> None:
    assert pf.parse_gpu_csv((FIX / "gb10" / file).read_text()) == [pf.Gpu("NVIDIA GB10", None)]


@pytest.mark.parametrize("cell", ["[N/A]", "N/A", "Not Supported", "[Not Supported]"])
def test_every_spelling_of_not_reported(cell: str) -> None:
    assert pf.parse_gpu_csv(f"NVIDIA GB10, {cell}\n") == [pf.Gpu("NVIDIA GB10", None)]


def test_several_gpus_and_empty_output() -> None:
    assert [g.memory for g in pf.parse_gpu_csv("A, 1024\nB, 2048\n")] == [1024 * MiB, 2048 * MiB]
    assert pf.parse_gpu_csv("\n") == []


def test_meminfo_and_df() -> None:
    assert pf.parse_meminfo((FIX / "gb10" / "meminfo").read_text()) == 127525296 * 1024
    with pytest.raises(ValueError):
        pf.parse_meminfo("MemFree: 1 kB\n")
    disk = pf.parse_df("       Avail Mounted on\n52701999104 /var/lib/my docker\n", "/x")
    assert disk == pf.Disk("/x", "/var/lib/my docker", 52701999104)


class FakeRunner:
    """Serves canned outputs by program name, like a node with those files would."""

    def __init__(self, node: str, gpu: str | None, meminfo: str, free: int = 100 * 10**9,
                 docker_ok: bool = True) -> None:
        self.node, self.gpu, self.meminfo, self.free, self.docker_ok = node, gpu, meminfo, free, docker_ok

    def read(self, argv: list[str], *, check: bool = True, timeout: float = 60) -> Result:
        """Answers the gather script part by part, in its own output format (one call per node)."""
        assert argv[:3] == ["sh", "-c", pf.GATHER_SCRIPT], argv
        df = f"Avail Mounted on\n{self.free} /"
        parts = [("meminfo", 0, self.meminfo)]
        if self.docker_ok:
            parts += [("docker", 0, '{"version":"27.3.1","runtimes":{"nvidia":{}},"root":"/var/lib/docker"}'),
                      ("docker_disk", 0, df)]
        else:
            parts.append(("docker", 1, "Cannot connect to the Docker daemon at unix:///var/run/docker.sock."))
        parts += [("hf_disk", 0, df),
                  ("gpu", 0, self.gpu) if self.gpu is not None else ("gpu", pf.NO_NVIDIA_SMI, "")]
        return Result("".join(f"@@RR {name} {code}\n{text}\n" for name, code, text in parts), "", 0)

    def run(self, argv, **kw) -> Result:  # pragma: no cover - preflight never changes anything
        raise AssertionError("preflight must only read")


def test_gb10_memory_falls_back_to_meminfo() -> None:
    r = FakeRunner("spark1", (FIX / "gb10" / "query-name-memory.csv").read_text(),
                   (FIX / "gb10" / "meminfo").read_text())
    facts = pf.judge(pf.gather(r), 10**9, require_gpu=True)
    assert facts.ok and facts.unified_memory
    assert facts.model_memory == 127525296 * 1024
    assert "121.6 GiB unified" in pf.render([facts])


def test_h200_memory_is_gpu_memory() -> None:
    r = FakeRunner("h200", (FIX / "h200" / "query-name-memory.csv").read_text(), "MemTotal: 2048 kB\n")
    facts = pf.judge(pf.gather(r))
    assert facts.model_memory == 143771 * MiB and not facts.unified_memory
    assert "140.4 GiB GPU" in pf.render([facts])


def test_one_failing_node_fails_the_run_with_the_whole_table() -> None:
    nodes = [Node("spark1"), Node("spark2"), Node("spark3")]
    gb10 = (FIX / "gb10" / "query-name-memory.csv").read_text()
    mem = (FIX / "gb10" / "meminfo").read_text()
    runners = {"spark1": FakeRunner("spark1", gb10, mem), "spark2": FakeRunner("spark2", gb10, mem, free=5 * 10**9),
               "spark3": FakeRunner("spark3", None, mem, docker_ok=False)}
    with pytest.raises(RunError) as e:
        pf.preflight(nodes, runners, {"spark1": 10**10, "spark2": 10**10, "spark3": 10**10}, require_gpu=True)
    table = str(e.value)
    lines = {ln.split()[0]: ln for ln in table.splitlines() if ln.strip().startswith("spark")}
    assert "ok" in lines["spark1"] and "FAIL" not in lines["spark1"]
    assert "FAIL: needs 10.0 GB on /, 5.0 GB free" in lines["spark2"]
    assert "FAIL: Docker not reachable" in lines["spark3"] and "none" in lines["spark3"]
    assert "nothing was changed" in table
    # all pass with enough disk: the facts come back in node order
    runners["spark2"].free = runners["spark3"].free = 10**11
    runners["spark3"].docker_ok = True
    runners["spark3"].gpu = gb10
    facts = pf.preflight(nodes, runners, {"spark1": 10**10})
    assert [f.node for f in facts] == ["spark1", "spark2", "spark3"] and all(f.ok for f in facts)


def test_split_need_adds_up_on_a_shared_filesystem() -> None:
    facts = pf.NodeFacts("n", docker_version="27", docker_disk=pf.Disk("/d", "/", 10),
                         hf_disk=pf.Disk("/h", "/", 10))
    assert pf.judge(facts, (6, 6)).problems == ["needs 12 B on /, 10 B free"]
    facts.hf_disk = pf.Disk("/h", "/data", 10)
    assert pf.judge(facts, (6, 6)).ok


def test_the_gather_script_runs_here_in_one_call_and_its_parts_parse(tmp_path: Path) -> None:
    """The real script under sh, on this machine: every part present, parsed as preflight reads it."""
    import subprocess

    out = subprocess.run(["sh", "-c", pf.GATHER_SCRIPT, "gather", "{{.NoSuchField}}", str(tmp_path / "a" / "b"), "1"],
                         capture_output=True, text=True, timeout=60).stdout
    parts = pf.parse_parts(out)
    assert {"meminfo", "docker", "hf_disk", "gpu", "links"} <= set(parts)
    assert parts["meminfo"][0] == 0 and pf.parse_meminfo(parts["meminfo"][1]) > 0
    assert parts["hf_disk"][0] == 0 and pf.parse_df(parts["hf_disk"][1], "x").free > 0
    assert parts["links"][0] == 0 and "lo" in pf.parse_links(parts["links"][1])
    assert parts["docker"][0] != 0 and "docker_disk" not in parts  # a format docker refuses: no root, no df
