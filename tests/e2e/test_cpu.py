"""CPU recipes (`build_args: [--cpu]`, vLLM's CPU build) on the real test dockerd, which has no GPU and no
NVIDIA runtime, like the machines they are for: no GPU is asked for or warned about, memory is judged
against system RAM, `--ray` is refused before anything starts. The image is the stand-in, tagged as
the recipe's: Dockerfile.cpu itself is not built here."""
from __future__ import annotations

import subprocess

from .conftest import Project, free_port, get_json

CPU_LINE = "CPU image: no GPU needed; memory checked against system RAM: local: needs "
NVIDIA_WARNING = "this Docker engine has no NVIDIA runtime: vLLM will find no GPU"


def cpu_recipe(tag: str, port: int, build_args: str = "build_args: [--cpu]", env: str = "") -> str:
    return f"""\
        recipe_version: "1"
        name: E2E CPU {tag}
        container: rr-e2e-{tag}
        {build_args}
        defaults: {{port: {port}, host: 127.0.0.1}}
        env: {{{env}}}
        command: vllm serve org/model --port {{port}} --host {{host}}
        """


def test_a_cpu_recipe_runs_with_no_gpu_asked_or_warned_and_its_memory_judged_on_ram(
        project: Project, standin_image: str) -> None:
    port = free_port()
    project.docker("tag", standin_image, "rr-e2e-cpu")
    project.recipe("cpu", cpu_recipe("cpu", port, env="VLLM_CPU_KVCACHE_SPACE: '1'"))
    res = project.cli("cpu", "-d")
    assert res.returncode == 0, res.stderr
    assert NVIDIA_WARNING not in res.stderr and "NVIDIA" not in res.stdout + res.stderr, res.stderr
    assert CPU_LINE + "1.1 GB, " in res.stderr and "(CPU image: its 1.1 GB KV cache (the weights come on top); " \
        "available = " in res.stderr, res.stderr
    (c,) = project.containers("cpu")
    assert not c["HostConfig"]["DeviceRequests"] and c["State"]["Running"]
    assert get_json(f"http://127.0.0.1:{port}/v1/models")["data"][0]["id"] == "org/model"

    # a GPU recipe on this GPU-less engine: warned as before, and the memory guard does not judge it
    project.docker("tag", standin_image, "rr-e2e-gpu")
    project.recipe("gpu", cpu_recipe("gpu", free_port(), build_args=""))
    gpu = project.cli("gpu", "-d")
    assert gpu.returncode == 0, gpu.stderr
    assert f"Warning: {NVIDIA_WARNING} (install nvidia-container-toolkit)" in gpu.stderr
    assert "CPU image" not in gpu.stderr


def test_a_cpu_recipe_asking_all_the_ram_is_refused_unless_its_image_sets_a_kv_cache(
        project: Project, standin_image: str) -> None:
    """Without a KV cache size vLLM's CPU worker reserves --gpu-memory-utilization of the RAM: all of it
    is never available, so the guard refuses, naming the RAM, and starts nothing. An image whose ENV
    sets VLLM_CPU_KVCACHE_SPACE (as Dockerfile.cpu does) is judged on that size instead."""
    project.docker("tag", standin_image, "rr-e2e-cpuall")
    project.recipe("cpuall", cpu_recipe("cpuall", free_port()))
    res = project.cli("cpuall", "-d", "--", "--gpu-memory-utilization", "1")
    assert res.returncode == 1, res.stderr
    assert "the server does not fit in memory now; nothing was started" in res.stderr
    assert "local: needs " in res.stderr and "(1 x " in res.stderr and " RAM (CPU image); available = " in res.stderr
    assert "Traceback" not in res.stderr and project.containers("cpuall") == []

    subprocess.run(["docker", "build", "-q", "-t", "rr-e2e-cpuenv", "-"], input=f"FROM {standin_image}\n"
                   "ENV VLLM_CPU_KVCACHE_SPACE=1\n", env=project.env, capture_output=True, text=True, check=True)
    res = project.cli("cpuall", "-t", "rr-e2e-cpuenv", "-d", "--", "--gpu-memory-utilization", "1")
    assert res.returncode == 0, res.stderr
    assert CPU_LINE + "1.1 GB, " in res.stderr and "its 1.1 GB KV cache" in res.stderr, res.stderr


def test_ray_with_a_cpu_recipe_is_refused_before_anything_starts(project: Project) -> None:
    project.recipe("cpuray", cpu_recipe("cpuray", free_port()))
    reason = ("vLLM's CPU build refuses Ray when its engine starts (\"current platform cpu does not support "
              "ray\"); nothing was started. Run it without --ray")
    res = project.cli("cpuray", "-n", "127.0.0.1,198.18.0.250", "--setup", "-d", "--ray")
    assert res.returncode == 1 and reason in res.stderr and "Traceback" not in res.stderr, res.stderr
    via_doit = project.doit("run", "recipe=cpuray", "ray=1", "nodes=127.0.0.1,198.18.0.250")
    assert via_doit.returncode == 1 and reason in via_doit.stderr, via_doit.stderr + via_doit.stdout
    assert project.containers("cpuray") == []
    assert project.docker("images", "-q", "rr-e2e-cpuray").stdout.strip() == ""  # nothing was built
    assert not (project.root / ".runrecipe" / "runs").exists()  # no run began
