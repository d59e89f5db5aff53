"""Facts and changes on a Docker engine, as small functions over a Runner.

Every fact (an image ID, a container's labels) is computed here, in one place,
so image, mods and launch steps agree on what "the same" means.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

from .errors import RunError
from .runner import Result

LABEL = "runrecipe"


class Runner(Protocol):
    node: str

    def read(self, argv: list[str], *, check: bool = True, timeout: float = 60) -> Result: ...

    def run(self, argv: list[str], *, stream: bool = True, timeout: float | None = None,
            check: bool = True) -> Result: ...


@dataclass(frozen=True)
class Container:
    id: str
    name: str
    state: str
    image: str
    labels: dict[str, str]

    @property
    def running(self) -> bool:
        return self.state == "running"


def ping(runner: Runner) -> None:
    """Fail early, and plainly, when the engine is not reachable."""
    res = runner.read(["docker", "version", "--format", "{{.Server.Version}}"], check=False, timeout=20)
    if not res.ok:
        raise RunError(f"the Docker engine on {runner.node} is not reachable: "
                       f"{(res.stderr.strip().splitlines() or ['no answer'])[-1]}\n"
                       "Start it (systemctl start docker) or set DOCKER_HOST")


def image_info(runner: Runner, ref: str) -> dict | None:
    """ID, labels and working dir of a local image, or None when the engine has no such image."""
    res = runner.read(["docker", "image", "inspect", "--format",
                       '{"id":{{json .Id}},"labels":{{json .Config.Labels}},"workdir":{{json .Config.WorkingDir}}}',
                       ref], check=False)
    if not res.ok:
        if "No such image" in res.stderr or "No such object" in res.stderr:
            return None
        raise RunError("cannot inspect image", node=runner.node, command=f"docker image inspect {ref}",
                       exit_code=res.exit_code, tail=res.stderr)
    info = json.loads(res.stdout.strip().splitlines()[0])
    info["labels"] = info.get("labels") or {}
    return info


def image_id(runner: Runner, ref: str) -> str | None:
    info = image_info(runner, ref)
    return info["id"] if info else None


def containers(runner: Runner, **labels: str) -> list[Container]:
    """Containers (running or not) carrying all the given runrecipe labels; matched by label, never by name."""
    argv = ["docker", "ps", "-a", "--no-trunc", "--format", "{{json .ID}}"]
    for key, value in labels.items():
        argv[3:3] = ["--filter", f"label={LABEL}.{key}={value}"]
    if not labels:
        argv[3:3] = ["--filter", f"label={LABEL}.recipe"]
    ids = [json.loads(line) for line in runner.read(argv).stdout.splitlines() if line.strip()]
    if not ids:
        return []
    res = runner.read(["docker", "inspect", "--format",
                       '{"id":{{json .Id}},"name":{{json .Name}},"state":{{json .State.Status}},'
                       '"image":{{json .Config.Image}},"labels":{{json .Config.Labels}}}', *ids], check=False)
    found = []
    for line in res.stdout.splitlines():
        if line.strip():
            d = json.loads(line)
            found.append(Container(d["id"], d["name"].lstrip("/"), d["state"], d["image"], d["labels"] or {}))
    return found


def container_named(runner: Runner, name: str) -> Container | None:
    res = runner.read(["docker", "inspect", "--type", "container", "--format",
                       '{"id":{{json .Id}},"state":{{json .State.Status}},"image":{{json .Config.Image}},'
                       '"labels":{{json .Config.Labels}}}', name], check=False)
    if not res.ok:
        return None
    d = json.loads(res.stdout.strip())
    return Container(d["id"], name, d["state"], d["image"], d["labels"] or {})


def state(runner: Runner, container_id: str) -> tuple[str, int]:
    """(status, exit code) of a container; ('gone', -1) once it no longer exists."""
    res = runner.read(["docker", "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}",
                       container_id], check=False)
    if not res.ok:
        return "gone", -1
    status, code = res.stdout.split()
    return status, int(code)


def logs_tail(runner: Runner, container_id: str, lines: int = 30) -> str:
    res = runner.read(["docker", "logs", "--tail", str(lines), container_id], check=False)
    return (res.stdout + res.stderr).strip()


def remove(runner: Runner, container_ids: list[str]) -> None:
    if container_ids:
        runner.run(["docker", "rm", "-f", *container_ids], stream=False)


def has_nvidia_runtime(runner: Runner) -> bool:
    res = runner.read(["docker", "info", "--format", "{{json .Runtimes}}"], check=False)
    return res.ok and "nvidia" in res.stdout
