"""The origin's container flags (origin-facts 6.3, 2.5): what they say, checked, as docker arguments.

    -e/--env VAR=VALUE      into the container; a secret-named VAR (masking.is_secret_key) travels in an
                            env file (container_create), never in argv, a printed line or the launch script
    -p/--publish H:C        solo only: the container leaves the host network and publishes these ports
    -v/--volume L:C[:opts]  passed to docker as given
    -j N                    MAX_JOBS, CMAKE_BUILD_PARALLEL_LEVEL, NINJAFLAGS, MAKEFLAGS for code that compiles
    --keep-entrypoint       the image's entrypoint runs the launch script (by default it is replaced)
    --earlyoom[-args A]     earlyoom runs beside the server (default args below); not with --keep-entrypoint
    --non-privileged        no --privileged/--ipc host: IPC_LOCK, shm, memory, swap and pids limits, each
                            settable (--shm-size-gb, --mem-limit-gb, --mem-swap-limit-gb, --pids-limit) and
                            refused without it, as the origin does
    --no-cache-dirs         the compile caches (COMPILE_CACHES) are not mounted

Plain data in, docker argv words out; nothing here runs a command.
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from . import masking
from .errors import ConfigError

EARLYOOM_ARGS = ("-M", "524288,102400", "-s", "100", "-r", "60")
# (folder under the node user's home, where the container's root user finds it); origin-facts 6.3
COMPILE_CACHES = ((".cache/vllm", "/root/.cache/vllm"), (".cache/flashinfer", "/root/.cache/flashinfer"),
                  (".triton", "/root/.triton"), (".tilelang", "/root/.tilelang"))
LIMIT_FLAGS = ("--mem-limit-gb", "--mem-swap-limit-gb", "--pids-limit", "--shm-size-gb")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PUBLISH = re.compile(r"(?:(\[[0-9A-Fa-f:.]+\]|[0-9.]+):)?([0-9]{1,5}):([0-9]{1,5})(/(?:tcp|udp|sctp))?")


@dataclass(frozen=True)
class Limits:
    """--non-privileged's caps, the origin's defaults: 110 GB memory, memory + 10 GB swap, 4096 pids, 64 GB shm."""

    memory_gb: int = 110
    swap_gb: int = 120
    pids: int = 4096
    shm_gb: int = 64


@dataclass(frozen=True)
class DockerSide:
    """What the user asked of the container beyond the recipe; the defaults are the origin's."""

    env: tuple[tuple[str, str], ...] = ()     # -e, in command-line order (docker keeps the last)
    volumes: tuple[str, ...] = ()
    publish: tuple[str, ...] = ()
    jobs: int | None = None
    keep_entrypoint: bool = False
    earlyoom: tuple[str, ...] | None = None   # earlyoom's arguments when --earlyoom
    cache_dirs: bool = True
    limits: Limits = field(default_factory=Limits)


def env_pair(text: str) -> tuple[str, str]:
    """`-e VAR=VALUE`, or `-e VAR` for VAR's value in this shell (a token then never appears on the line)."""
    name, sep, value = text.partition("=")
    if not _NAME.fullmatch(name):
        # only the leading name characters are shown: `-e HF_TOKEN:hf_...` carries the secret in its "name"
        head = re.match(r"[A-Za-z0-9_]*", name).group()  # type: ignore[union-attr]
        shown = head if head == name else f"{head}..."
        raise ConfigError(f"-e/--env '{shown}{sep and '=...'}': '{shown}' is not a variable name (letters, "
                          "digits and _, not starting with a digit); write -e VAR=VALUE")
    if not sep:
        if name not in os.environ:
            raise ConfigError(f"-e/--env {name}: {name} is not set in this shell; write -e {name}=VALUE or "
                              f"export {name} first")
        value = os.environ[name]
    if "\n" in value or "\0" in value:
        raise ConfigError(f"-e/--env {name}: the value has a line break or NUL byte, which an environment "
                          "variable in an env file cannot carry")
    return name, value


def publish_spec(text: str) -> str:
    """`-p [IP:]HOST:CONTAINER[/proto]`: the one form whose host port we can name for readiness checks."""
    match = _PUBLISH.fullmatch(text)
    if not match or not all(0 < int(p) < 65536 for p in match.group(2, 3)):
        raise ConfigError(f"-p/--publish '{text}' is not HOST:CONTAINER (e.g. -p 8000:8000 or "
                          "-p 127.0.0.1:9000:8000); each port 1-65535, no ranges")
    return text


def volume_spec(text: str) -> str:
    if ":" not in text or text.startswith(":") or "\n" in text:
        raise ConfigError(f"-v/--volume '{text}' is not LOCAL:CONTAINER[:OPTIONS] (e.g. -v /data:/data:ro)")
    return text


def make(*, env: Sequence[str] = (), volumes: Sequence[str] = (), publish: Sequence[str] = (),
         jobs: int | None = None, keep_entrypoint: bool = False, earlyoom: bool = False,
         earlyoom_args: str | None = None, cache_dirs: bool = True, privileged: bool = True,
         limits: Mapping[str, int | None] | None = None) -> DockerSide:
    """The checked DockerSide of a command line. `limits` maps each LIMIT_FLAGS flag to its value or None.

    A limit flag without --non-privileged (flag or .env NON_PRIVILEGED) is refused, as the origin does;
    so are --earlyoom with --keep-entrypoint, and --earlyoom-args without --earlyoom."""
    given = {k: v for k, v in (limits or {}).items() if v is not None}
    if given and privileged:
        raise ConfigError(f"{', '.join(given)} set(s) a limit of a non-privileged container: add "
                          "--non-privileged (or .env NON_PRIVILEGED=1); a privileged container has none")
    if earlyoom and keep_entrypoint:
        raise ConfigError("--earlyoom replaces the container's entry process, --keep-entrypoint keeps the "
                          "image's: choose one")
    if earlyoom_args is not None and not earlyoom:
        raise ConfigError("--earlyoom-args is for --earlyoom: add --earlyoom (default arguments: "
                          f"{' '.join(EARLYOOM_ARGS)})")
    memory = given.get("--mem-limit-gb", Limits.memory_gb)
    swap = given.get("--mem-swap-limit-gb", memory + 10)
    if swap < memory:
        raise ConfigError(f"--mem-swap-limit-gb {swap} is below the memory limit ({memory} GB): docker's "
                          "--memory-swap is memory plus swap, so give at least the memory limit")
    pairs = tuple(env_pair(e) for e in env)
    masking.remember(dict(pairs))  # every later message is scrubbed of a secret value
    return DockerSide(
        env=pairs, volumes=tuple(volume_spec(v) for v in volumes),
        publish=tuple(publish_spec(p) for p in publish), jobs=jobs, keep_entrypoint=keep_entrypoint,
        earlyoom=(tuple(_words(earlyoom_args)) if earlyoom_args is not None else EARLYOOM_ARGS) if earlyoom else None,
        cache_dirs=cache_dirs,
        limits=Limits(memory, swap, given.get("--pids-limit", Limits.pids), given.get("--shm-size-gb", Limits.shm_gb)))


def _words(text: str) -> list[str]:
    """--earlyoom-args as the origin word-splits it, but with shell quoting honoured (one scanner)."""
    from .errors import RenderError
    from .shellwords import Word, split

    try:
        tokens = split(text)
    except RenderError as exc:
        raise ConfigError(f"--earlyoom-args '{text}': {exc}") from None
    if not all(isinstance(t, Word) and t.plain for t in tokens):
        raise ConfigError(f"--earlyoom-args '{text}': only plain arguments (no shell operators or expansions)")
    return [t.value for t in tokens]


def check_mode(side: DockerSide, mode: str) -> None:
    """-p is for one node: a cluster's nodes meet over the host network (NCCL, torch.distributed, Ray)."""
    if side.publish and mode == "cluster":
        raise ConfigError("-p/--publish is for a solo run: cluster nodes talk over the host network (NCCL, "
                          "torch.distributed), so a cluster's containers stay on it. Drop -p and reach the "
                          "head at its port, or run with --solo")


def host_port(side: DockerSide, port: int) -> int:
    """The port clients reach the server at: with -p, the host port published for the server's port."""
    if not side.publish:
        return port
    for spec in side.publish:
        match = _PUBLISH.fullmatch(spec)
        if match and int(match.group(3)) == port and match.group(4) in (None, "/tcp"):
            return int(match.group(2))
    raise ConfigError(f"-p/--publish takes the container off the host network, and no -p publishes the "
                      f"server's port {port}: add -p {port}:{port} (or -p HOST:{port})")


def secret_env(side: DockerSide) -> dict[str, str]:
    """The -e variables whose name says secret: they go in the env file only."""
    return {k: v for k, v in side.env if masking.is_secret_key(k)}


def public_env(side: DockerSide) -> dict[str, str]:
    """The other -e variables, then -j's, as `docker -e` takes them (origin order: -e before -j)."""
    env = {k: v for k, v in side.env if not masking.is_secret_key(k)}
    if side.jobs:
        env.update({"MAX_JOBS": str(side.jobs), "CMAKE_BUILD_PARALLEL_LEVEL": str(side.jobs),
                    "NINJAFLAGS": f"-j{side.jobs}", "MAKEFLAGS": f"-j{side.jobs}"})
    return env


def env_file_text(side: DockerSide) -> str:
    """docker's --env-file format: one VAR=VALUE a line, taken literally."""
    return "".join(f"{k}={v}\n" for k, v in secret_env(side).items())


def secrets_digest(side: DockerSide) -> str:
    """What the launch hash keeps of the secrets: a changed value restarts the server, the value stays unknown."""
    text = env_file_text(side)
    return hashlib.sha256(text.encode()).hexdigest() if text else ""


def network_args(side: DockerSide) -> list[str]:
    return [a for spec in side.publish for a in ("-p", spec)] or ["--network", "host"]


def privilege_args(side: DockerSide, privileged: bool, infiniband: bool) -> list[str]:
    """The origin's two shapes: --privileged with host IPC, or IPC_LOCK with shm, memory, swap and pids caps."""
    if privileged:
        return ["--privileged", "--ipc", "host"]
    lim = side.limits
    return (["--cap-add", "IPC_LOCK", "--shm-size", f"{lim.shm_gb}g"]
            + (["--device", "/dev/infiniband"] if infiniband else [])
            + ["--memory", f"{lim.memory_gb}g", "--memory-swap", f"{lim.swap_gb}g", "--pids-limit", str(lim.pids)])


def user_args(side: DockerSide) -> list[str]:
    return [a for v in side.volumes for a in ("-v", v)]


# earlyoom beside the server: the launch script stays the container's main work, earlyoom its guard
_EARLYOOM = ('command -v earlyoom >/dev/null || { echo "--earlyoom: earlyoom is not installed in this image" >&2; '
             'exit 127; }; earlyoom "$@" & exec bash "$RUNRECIPE_SCRIPT"')


def entry_args(side: DockerSide, image: str, script: str) -> list[str]:
    """The image and what the container runs: bash on the script as its entrypoint (the origin clears the
    image's), the image's own entrypoint given `bash SCRIPT`, or earlyoom and the script."""
    if side.keep_entrypoint:
        return [image, "bash", script]
    if side.earlyoom is not None:
        return ["-e", f"RUNRECIPE_SCRIPT={script}", "--entrypoint", "bash", image, "-c", _EARLYOOM, "earlyoom",
                *side.earlyoom]
    return ["--entrypoint", "bash", image, script]


def cache_mounts(side: DockerSide) -> tuple[tuple[str, str], ...]:
    return COMPILE_CACHES if side.cache_dirs else ()


def describe(side: DockerSide, privileged: bool, env: Mapping[str, str], mounts: Sequence[str]) -> dict[str, object]:
    """The docker side for --dry-run: env (secret values masked; `env_file` names those that travel in the
    env file), NCCL_DEBUG, mounts (`mounts` first, then the compile caches under the node user's ~, then -v),
    network and ports, limits, and what the container runs."""
    shown = {k: masking.mask(k, v) for k, v in env.items()}
    shown |= {k: masking.MASK for k in secret_env(side)}
    return {"env": shown,
            "env_file": sorted(secret_env(side)),
            "nccl_debug": env.get("NCCL_DEBUG", ""),
            "mounts": [*mounts, *(f"~/{rel}:{target}" for rel, target in cache_mounts(side)), *side.volumes],
            "network": "bridge, ports published" if side.publish else "host",
            "ports": list(side.publish),
            "privileged": privileged,
            "limits": {} if privileged else {"memory": f"{side.limits.memory_gb}g",
                                             "memory_swap": f"{side.limits.swap_gb}g",
                                             "pids": side.limits.pids, "shm": f"{side.limits.shm_gb}g"},
            "entry": ("the image's entrypoint" if side.keep_entrypoint else
                      "earlyoom " + " ".join(side.earlyoom) + " beside the script" if side.earlyoom is not None
                      else "bash (the image's entrypoint replaced)")}

