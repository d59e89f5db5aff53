"""Facts of a Docker engine, as small functions over a Connector: they only read.

Every fact (an image ID, a container's labels) is computed here, in one place,
so image, mods and launch steps agree on what "the same" means. What changes an engine
(a removal, a start) is a Command the executor runs (ops/answers.py, ops/execute.py).
"""
from __future__ import annotations

import json
from datetime import datetime, timezone
from dataclasses import dataclass
from typing import Any

from ..connect import Connector
from ..errors import RunError
from ..masking import printable
from . import cache as facts

LABEL = "runrecipe"
# The labels a server container carries (all under "runrecipe.").
LABEL_KEYS = ("recipe", "inputs", "file", "endpoint", "started", "weights", "stack")
# what a run needs of an engine: version, runtimes (nvidia?) and data root (its free disk)
LOG_TAIL = 30  # lines of a server's log an error shows
ENGINE_FORMAT = '{"version":{{json .ServerVersion}},"runtimes":{{json .Runtimes}},"root":{{json .DockerRootDir}}}'


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


def engine_facts(runner: Connector) -> dict[str, Any]:
    """Server version, runtimes and data root, asked once per node per run (preflight's gather tells it too)."""
    return facts.fact(runner.node, "docker info", (), lambda: _engine_facts(runner))


def _engine_facts(runner: Connector) -> dict[str, Any]:
    res = runner.read(["docker", "info", "--format", ENGINE_FORMAT], check=False, timeout=20)
    found = json.loads(res.stdout.strip().splitlines()[-1]) if res.ok and res.stdout.strip() else {}
    if not res.ok or not found.get("version"):
        raise RunError(f"the Docker engine on {runner.node} is not reachable: "
                       f"{(res.stderr.strip().splitlines() or ['no answer'])[-1]}\n"
                       "Start it (systemctl start docker) or set DOCKER_HOST")
    return found


def has_nvidia_runtime(runner: Connector) -> bool:
    return "nvidia" in (engine_facts(runner).get("runtimes") or {})


def image_info(runner: Connector, ref: str) -> dict | None:
    """ID, labels, working dir, size and env (the `ENV` its containers start with) of a local image, or None
    when the engine has no such image."""
    return facts.fact(runner.node, "image", ref, lambda: _image_info(runner, ref))


def _image_info(runner: Connector, ref: str) -> dict | None:
    res = runner.read(["docker", "image", "inspect", "--format",
                       '{"id":{{json .Id}},"labels":{{json .Config.Labels}},"workdir":{{json .Config.WorkingDir}},'
                       '"size":{{json .Size}},"env":{{json .Config.Env}}}',
                       ref], check=False)
    if not res.ok:
        if "No such image" in res.stderr or "No such object" in res.stderr:
            return None
        raise RunError("cannot inspect image", node=runner.node, command=f"docker image inspect {ref}",
                       exit_code=res.exit_code, tail=res.stderr)
    info = json.loads(res.stdout.strip().splitlines()[0])
    info["labels"] = info.get("labels") or {}
    info["env"] = dict(entry.split("=", 1) for entry in info.get("env") or [] if "=" in entry)
    return info


def image_id(runner: Connector, ref: str) -> str | None:
    info = image_info(runner, ref)
    return info["id"] if info else None


def containers(runner: Connector, **labels: str) -> list[Container]:
    """Containers (running or not) carrying all the given runrecipe labels; matched by label, never by name."""
    key = tuple(sorted(labels.items()))
    return list(facts.fact(runner.node, "containers", key, lambda: _containers(runner, labels)))


def _containers(runner: Connector, labels: dict[str, str]) -> tuple[Container, ...]:
    fields = ["{{json .ID}}", "{{json .Names}}", "{{json .State}}", "{{json .Image}}", "{{json .CreatedAt}}"]
    fields += [f'{{{{json (.Label "{LABEL}.{key}")}}}}' for key in LABEL_KEYS]
    argv = ["docker", "ps", "-a", "--no-trunc", "--format", "\t".join(fields)]
    for key, value in (labels or {"recipe": ""}).items():
        argv += ["--filter", f"label={LABEL}.{key}" + (f"={value}" if value else "")]
    found = []
    for line in runner.read(argv).stdout.splitlines():
        if line.strip():
            cid, name, state, image, created, *values = (json.loads(v) for v in line.split("\t"))
            labels = {f"{LABEL}.{k}": v for k, v in zip(LABEL_KEYS, values) if v}
            labels.setdefault(f"{LABEL}.started", _created(created))
            found.append(Container(cid, name, state, image, labels))
    return tuple(found)


def _created(text: str) -> str:
    """`docker ps`'s CreatedAt ("2026-12-07 13:30:00 +0000 UTC") as the ISO time a server's `started` shows.
    Docker keeps the creation time, so the create command carries no clock value: `plan` can show it as it runs."""
    try:
        return datetime.strptime(" ".join(text.split()[:3]), "%Y-%m-%d %H:%M:%S %z").astimezone(timezone.utc) \
            .isoformat(timespec="seconds")
    except ValueError:
        return ""


def container_named(runner: Connector, name: str) -> Container | None:
    res = runner.read(["docker", "inspect", "--type", "container", "--format",
                       '{"id":{{json .Id}},"state":{{json .State.Status}},"image":{{json .Config.Image}},'
                       '"labels":{{json .Config.Labels}}}', name], check=False)
    if not res.ok:
        return None
    d = json.loads(res.stdout.strip())
    return Container(d["id"], name, d["state"], d["image"], d["labels"] or {})


def state(runner: Connector, container_id: str) -> tuple[str, int]:
    """(status, exit code) of a container; ('gone', -1) once it no longer exists."""
    res = runner.read(["docker", "inspect", "--format", "{{.State.Status}} {{.State.ExitCode}}",
                       container_id], check=False)
    if not res.ok:
        return "gone", -1
    status, code = res.stdout.split()
    return status, int(code)


def logs_tail(runner: Connector, container_id: str, lines: int = LOG_TAIL) -> str:
    """The server's last lines as text to keep and show: what the container wrote cannot steer a terminal."""
    res = runner.read(["docker", "logs", "--tail", str(lines), container_id], check=False)
    return printable(res.stdout + res.stderr).strip()


def logs(runner: Connector, container_id: str, timeout: float = 30) -> str:
    """A container's whole log as a terminal shows `docker logs`: stdout and stderr lines in the order
    they were written. A captured read returns the two streams apart (vLLM logs to stdout, tracebacks go
    to stderr), so they are merged by docker's timestamps (fixed width, UTC: they sort as text)."""
    res = runner.read(["docker", "logs", "--timestamps", container_id], timeout=timeout)
    stamped: list[tuple[str, int, int, str]] = []
    for stream, text in enumerate((res.stdout, res.stderr)):
        lines = text.split("\n")  # not splitlines: a progress bar's \r stays inside its line
        if lines[-1] == "":
            lines.pop()
        for line in lines:
            stamp, _, rest = line.partition(" ")
            stamped.append((stamp, stream, len(stamped), rest))
    return "".join(f"{line}\n" for *_, line in sorted(stamped))
