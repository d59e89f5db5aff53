"""run-recipe's container flags on the command line (the origin's, container_flags holds their meaning):
their argparse group, the DockerSide they make, and a node's docker side as --dry-run prints it."""
from __future__ import annotations

import argparse
from typing import Any

from .. import container_flags
from ..container_flags import DockerSide
from ..flagtypes import count
from ..plan import Plan


def container_group(p: argparse.ArgumentParser) -> None:
    """The origin's container flags (container_flags), with its meanings and defaults."""
    g = p.add_argument_group("container (spark-vllm-docker's flags)")
    g.add_argument("-e", "--env", action="append", default=[], metavar="VAR=VALUE",
                   help="set VAR in every container (repeatable; -e VAR takes this shell's value); a secret-named "
                   "VAR (TOKEN, KEY, SECRET, PASSWORD) goes through a 0600 env file, never argv")
    g.add_argument("-p", "--publish", action="append", default=[], metavar="HOST:CONTAINER",
                   help="solo only: leave the host network and publish this port (repeatable; the server's port "
                   "must be among them)")
    g.add_argument("-v", "--volume", action="append", default=[], metavar="LOCAL:CONTAINER[:OPTS]",
                   help="mount into every container, passed to docker as given (repeatable)")
    g.add_argument("-j", dest="jobs", type=count(1024), metavar="N",
                   help="MAX_JOBS, CMAKE_BUILD_PARALLEL_LEVEL, NINJAFLAGS=-jN, MAKEFLAGS=-jN in the containers")
    g.add_argument("--no-cache-dirs", action="store_true",
                   help="do not mount the compile caches (~/.cache/vllm, ~/.cache/flashinfer, ~/.triton, ~/.tilelang)")
    g.add_argument("--keep-entrypoint", action="store_true",
                   help="keep the image's entrypoint (it is given `bash SCRIPT`); by default it is replaced")
    g.add_argument("--earlyoom", action="store_true", help="run earlyoom beside the server (not with --keep-entrypoint)")
    g.add_argument("--earlyoom-args", metavar="ARGS",
                   help="earlyoom's arguments (default: -M 524288,102400 -s 100 -r 60); write --earlyoom-args='-M ...'")
    g.add_argument("--mem-limit-gb", type=count(2**20), metavar="GB", help="--non-privileged: memory limit (default 110)")
    g.add_argument("--mem-swap-limit-gb", type=count(2**20), metavar="GB",
                   help="--non-privileged: memory plus swap limit (default memory + 10)")
    g.add_argument("--pids-limit", type=count(2**22), metavar="N", help="--non-privileged: process limit (default 4096)")
    g.add_argument("--shm-size-gb", type=count(2**20), metavar="GB", help="--non-privileged: /dev/shm size (default 64)")


def docker_side(ns: argparse.Namespace, privileged: bool) -> DockerSide:
    return container_flags.make(
        env=ns.env, volumes=ns.volume, publish=ns.publish, jobs=ns.jobs, keep_entrypoint=ns.keep_entrypoint,
        earlyoom=ns.earlyoom, earlyoom_args=ns.earlyoom_args, cache_dirs=not ns.no_cache_dirs, privileged=privileged,
        limits={flag: getattr(ns, flag[2:].replace("-", "_")) for flag in container_flags.LIMIT_FLAGS})


def docker_view(plan: Plan) -> dict[str, Any]:
    """A node's container as --dry-run shows it (container_flags.describe); no node is asked."""
    from ..ops.served import hf_mounts

    return container_flags.describe(plan.options.docker, plan.options.privileged, plan.docker_env, hf_mounts(plan))


def print_docker(view: dict[str, Any], indent: str) -> None:
    limits = ", ".join(f"{k} {v}" for k, v in view["limits"].items())
    print(f"{indent[:-2]}docker:")
    for label, text in (
            ("network", view["network"] + (f" ({', '.join(view['ports'])})" if view["ports"] else "")),
            ("privileged", "yes (no limits)" if view["privileged"] else f"no: {limits}"),
            ("entry", view["entry"]),
            ("NCCL_DEBUG", view["nccl_debug"] or "not set (--nccl-debug LEVEL)")):
        print(f"{indent}{label + ':':<12}{text}")
    for mount in view["mounts"]:
        print(f"{indent}{'mount:':<12}{mount}")
    for key, value in view["env"].items():
        where = " (env file, 0600)" if key in view["env_file"] else ""
        print(f"{indent}{'env:':<12}{key}={value}{where}")

