"""Find or start a dockerd the tests may use.

Tests never touch the machine's default daemon unless $DOCKER_HOST points at it:
they start a private one (tests/harness/dockerd.sh) that leaves the host's
firewall alone and keeps its images cached between runs.
"""
from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

DOCKERD_SH = Path(__file__).with_name("dockerd.sh")
_NAME = os.environ.get("RR_TEST_DOCKERD", "")
PRIVATE_HOST = f"unix:///run/runrecipe-test/docker{'-' + _NAME if _NAME else ''}.sock"


class DockerUnavailable(RuntimeError):
    """No dockerd answers and none can be started here."""


def docker_env(docker_host: str) -> dict[str, str]:
    """Environment for the docker CLI bound to one daemon.

    DOCKER_BUILDKIT=0: the 28.x client here has no buildx, and the legacy
    builder is what the 20.10 engine is tested with.
    """
    return {**os.environ, "DOCKER_HOST": docker_host, "DOCKER_BUILDKIT": "0"}


def run_docker(docker_host: str, *args: str, check: bool = True,
               timeout: float | None = 120) -> subprocess.CompletedProcess[str]:
    """Run `docker ARGS` against docker_host, capturing text output.

    On failure the error includes stderr, which CalledProcessError hides by default.
    """
    proc = subprocess.run(["docker", *args], env=docker_env(docker_host),
                          capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise subprocess.CalledProcessError(
            proc.returncode, proc.args, proc.stdout,
            f"{proc.stderr}\n(docker {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()})")
    return proc


def answers(docker_host: str) -> bool:
    """True if `docker info` succeeds against docker_host."""
    if shutil.which("docker") is None:
        return False
    try:
        return run_docker(docker_host, "info", check=False, timeout=15).returncode == 0
    except subprocess.TimeoutExpired:
        return False


@functools.cache
def docker_host() -> str:
    """$DOCKER_HOST if it answers, else the private test dockerd (started if needed)."""
    env_host = os.environ.get("DOCKER_HOST")
    if env_host and answers(env_host):
        return env_host
    if shutil.which("docker") is None:
        raise DockerUnavailable("no docker client on PATH (apt-get install docker.io)")
    if os.geteuid() != 0:
        raise DockerUnavailable(
            f"DOCKER_HOST={env_host or '(unset)'} does not answer and starting the private "
            "test dockerd needs root")
    if shutil.which("dockerd") is None:
        raise DockerUnavailable(
            f"DOCKER_HOST={env_host or '(unset)'} does not answer and there is no dockerd "
            "binary to start (apt-get install docker.io)")
    proc = subprocess.run(["bash", str(DOCKERD_SH), "start"], capture_output=True, text=True)
    if proc.returncode != 0 or not answers(PRIVATE_HOST):
        raise DockerUnavailable(f"{DOCKERD_SH} start failed:\n{proc.stderr}")
    return PRIVATE_HOST
