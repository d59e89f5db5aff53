"""run-recipe: the seed-compatible command line, a thin layer over recipe -> plan -> graph.

Each command parses its flags, calls the library, and turns RunRecipeError into
a one-paragraph message on stderr with a non-zero exit code, never a traceback.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Sequence

from .. import settings
from ..graph import session
from ..ops import vllm_check
from .container import container_group, docker_side
from .events import install_for_environment
from ..errors import ConfigError, RunRecipeError
from ..config import read_settings
from ..flagtypes import MAX_LEN_HINT, apply_mod, apply_pr, fraction, port, seconds, unknown_options, whole
from ..masking import scrub
from ..plan import OVERRIDE_FLAGS, Options, Plan, make_plan, parse_overrides
from .plan_views import dry_run, inspect_plan

SUBCOMMANDS = ("status", "stop", "logs")
SUPERVISE = ("watch", "install-service", "uninstall-service")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        install_for_environment()  # the library's events rendered as text (or JSON lines) from here on
        _refuse_undecodable(args)
        if args and args[0] in COMMANDS:
            return COMMANDS[args[0]].run(args[0], args[1:])
        return _run(args)
    except RunRecipeError as exc:
        print(f"Error: {scrub(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


@dataclass(frozen=True)
class Command:
    """One first word of run-recipe: the handler that parses its words and runs it, and its parser (for
    --help and a generated CLI reference; made on demand, so a run imports only its own command)."""

    run: Callable[[str, list[str]], int]
    parser: Callable[[str], argparse.ArgumentParser]


# Each command's module, imported when its command runs: a run imports only its own command.
def _lint_cli() -> ModuleType:
    from . import lint as lint_cli
    return lint_cli


def _bench_cli() -> ModuleType:
    from . import bench as bench_cli
    return bench_cli


def _stack_cli() -> ModuleType:
    from . import stack as stack_cli
    return stack_cli


def _supervise() -> ModuleType:
    from . import supervise
    return supervise


def _lifecycle_cli() -> ModuleType:
    from . import lifecycle as lifecycle_cli
    return lifecycle_cli


# The first word names a command (each parses its own flags); any other first word is a run's recipe.
COMMANDS: dict[str, Command] = {
    "lint": Command(lambda name, args: _lint_cli().main(args), lambda name: _lint_cli().parser()),
    "bench": Command(lambda name, args: _bench_cli().main(args), lambda name: _bench_cli().parser()),
    "stack": Command(lambda name, args: _stack_cli().main(args), lambda name: _stack_cli().parser()),
    "plan": Command(lambda name, args: _run(args, inspect=True), lambda name: parser()),
    **{name: Command(lambda name, args: _supervise().main(name, args, plan_words),
                     lambda name: _supervise().parser(name)) for name in SUPERVISE},
    **{name: Command(lambda name, args: _lifecycle_cli().main(name, args),
                     lambda name: _lifecycle_cli().parser(name)) for name in SUBCOMMANDS},
}


def _refuse_undecodable(args: list[str]) -> None:
    """Bytes that are not UTF-8 reach Python as lone surrogates, which no script, label or message can carry
    (`-o host=$'\\xff'` ended in a UnicodeEncodeError traceback): refuse them, naming the argument."""
    for arg in args:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            shown = arg.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            raise ConfigError(f"argument '{shown}' is not UTF-8 text; runrecipe passes arguments into scripts "
                              "and labels, which must be text") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="run-recipe", usage="run-recipe [OPTIONS] [RECIPE] [-- EXTRA_VLLM_ARGS...]\n"
        "       run-recipe plan RECIPE [OPTIONS]   (ask every node, read-only, what would run)\n"
        "       run-recipe status|stop|logs|lint|bench ...\n"
        "       run-recipe stack NAME|FILE [stop|status] [-d] [--setup] [--dry-run] [--json]\n"
        "       run-recipe watch|install-service RECIPE [OPTIONS], uninstall-service RECIPE",
        description="Serve a model with vLLM from a YAML recipe, on one node or a cluster. "
        "Steps whose inputs did not change are skipped.")
    p.add_argument("recipe", nargs="?", help="recipe name (searched in recipes/, sub-folders too) or path")
    g = p.add_argument_group("cluster discovery")
    g.add_argument("--discover", action="store_true", help="find cluster nodes and save them to .env")
    g.add_argument("--show-env", action="store_true", help="show the .env configuration (secrets masked)")
    g.add_argument("--config", type=Path, metavar="FILE", help="read nodes and settings from FILE instead of .env")
    g.add_argument("--interface", metavar="IF", help="--discover: scan this interface's subnet (default: the default route's)")
    g.add_argument("--cidr", metavar="NET", help="--discover: scan this network instead (needed for a /16 or wider)")
    g.add_argument("-y", "--yes", action="store_true", help="--discover: take every confirmed node, no prompts")
    g = p.add_argument_group("recipe overrides")
    g.add_argument("--port", type=port, help="override the port parameter")
    g.add_argument("--host", help="override the host parameter")
    g.add_argument("--tensor-parallel", "--tp", dest="tensor_parallel", type=whole(1024),
                   metavar="N", help="override tensor parallelism")
    g.add_argument("--gpu-memory-utilization", "--gpu-mem", dest="gpu_memory_utilization", type=fraction,
                   metavar="N", help="override GPU memory utilization (above 0, at most 1)")
    g.add_argument("--max-model-len", type=whole(2**31 - 1, MAX_LEN_HINT), metavar="N",
                   help="override the maximum model length")
    g.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE",
                   help="set any recipe parameter (repeatable); wins over the flags above")
    g = p.add_argument_group("setup")
    g.add_argument("--setup", action="store_true", help="build the image if its inputs changed, then run")
    only = g.add_mutually_exclusive_group()  # argparse names the pair when both are given
    only.add_argument("--build-only", action="store_true", help="only build the image, do not run")
    only.add_argument("--download-only", action="store_true", help="only download the model, do not run")
    build = g.add_mutually_exclusive_group()
    build.add_argument("--force-build", action="store_true", help="rebuild even if the image is up to date")
    build.add_argument("--no-build", action="store_true",
                       help="with --setup/--build-only: use the image as it is on this machine (pulled or built "
                       "elsewhere), never build it; it is still copied to the workers")
    g.add_argument("--force-download", action="store_true", help="download again even if the model is complete")
    g.add_argument("--revision", metavar="REV", help="model branch, tag or commit (overrides the recipe's revision)")
    g.add_argument("--verify", action="store_true",
                   help="hash every weight file against its name; fetch mismatches again")
    g = p.add_argument_group("launch")
    where = g.add_mutually_exclusive_group()
    where.add_argument("--solo", action="store_true", help="run on this machine only (no cluster)")
    where.add_argument("-n", "--nodes", metavar="IPS", help="comma-separated nodes, first = head")
    g.add_argument("-d", "--daemon", action="store_true", help="return once the server is ready")
    g.add_argument("-t", "--container", metavar="IMAGE", help="use IMAGE instead of the recipe's container")
    g.add_argument("--name", help="container name (default: runrecipe-<recipe>)")
    g.add_argument("--nccl-debug", metavar="LEVEL", choices=["VERSION", "WARN", "INFO", "TRACE"],
                   help="NCCL debug level (VERSION, WARN, INFO, TRACE)")
    g.add_argument("--non-privileged", action="store_true",
                   help="run without --privileged and host IPC: IPC_LOCK and the limits below; also .env NON_PRIVILEGED=1")
    backend = g.add_mutually_exclusive_group()
    backend.add_argument("--ray", dest="ray", action="store_true", default=None,
                         help="cluster: spread vLLM with Ray (the recipe's executor flag is set to ray)")
    backend.add_argument("--no-ray", dest="ray", action="store_false",
                         help="cluster: native multi-node, the default: each node runs vLLM with its "
                         "--node-rank; the recipe's executor flag is removed")
    g.add_argument("--eth-if", metavar="IF", help="cluster: network interface for NCCL/Gloo (also .env ETH_IF)")
    g.add_argument("--ib-if", metavar="HCAS", help="cluster: InfiniBand/RoCE HCAs, comma list (also .env IB_IF)")
    g.add_argument("--master-port", type=port, metavar="PORT",
                   help="cluster: Ray / torch.distributed port (default 29501; also .env MASTER_PORT)")
    g.add_argument("--head-port", dest="master_port", type=port, help=argparse.SUPPRESS)  # the origin's alias
    g.add_argument("--trust-new-hosts", action="store_true",
                   help="record unknown SSH host keys in known_hosts (changed keys are always refused)")
    g.add_argument("--apply-mod", dest="apply", action="append", type=apply_mod, default=[], metavar="PATH",
                   help="apply this mod (folder or .zip with run.sh) after the recipe's mods (repeatable)")
    g.add_argument("--apply-vllm-pr", dest="apply", action="append", type=apply_pr, metavar="N|URL",
                   help="apply a vLLM pull request's diff as a mod, fetched once into the cache (repeatable)")
    g.add_argument("--restart", action="store_true", help="give the container a restart policy (survives reboots)")
    g.add_argument("--force", action="store_true", help="start even if the memory guard finds too little free memory")
    g.add_argument("--ready-timeout", type=seconds, default=1800.0, metavar="SECONDS",
                   help="how long to wait for the server to answer (default 1800)")
    g.add_argument("--skip-vllm-check", action="store_true",
                   help="do not ask the image's vLLM whether it accepts the command before anything is copied")
    container_group(p)
    g = p.add_argument_group("other")
    g.add_argument("--dry-run", action="store_true", help="show the plan and what would run, change nothing")
    g.add_argument("-l", "--list", action="store_true", help="list the recipes")
    g.add_argument("--json", action="store_true", help="with --list or --dry-run: print JSON")
    g.add_argument("--no-wait", action="store_true", help="fail instead of waiting when another run is busy")
    g.add_argument("--reform", action="store_true", help=argparse.SUPPRESS)  # the watcher's converge: see Options
    return p


def _split_extra(args: list[str]) -> tuple[list[str], list[str]]:
    if "--" in args:
        i = args.index("--")
        return args[:i], args[i + 1:]
    return args, []


def options_from(ns: argparse.Namespace, extra: list[str]) -> Options:
    overrides = {k: v for k in OVERRIDE_FLAGS
                 if (v := getattr(ns, k)) is not None}
    overrides.update(parse_overrides(ns.override, "-o"))
    given = read_settings(ns.config, eth_if=ns.eth_if, ib_if=ns.ib_if, master_port=ns.master_port,
                          non_privileged=ns.non_privileged)  # the .env read once: the plan takes it from here
    return Options(overrides=overrides, extra_args=tuple(extra), solo=ns.solo, nodes=ns.nodes,
                   config=ns.config, container=ns.container, name=ns.name, nccl_debug=ns.nccl_debug,
                   setup=ns.setup or ns.build_only or ns.force_build, force_build=ns.force_build,
                   no_build=ns.no_build,
                   download=ns.setup or ns.download_only or ns.force_download or ns.verify,
                   force_download=ns.force_download, verify=ns.verify, revision=ns.revision,
                   daemon=ns.daemon, restart=ns.restart, ready_timeout=ns.ready_timeout, ray=bool(ns.ray),
                   force=ns.force, trust_new_hosts=ns.trust_new_hosts, apply=tuple(ns.apply),
                   skip_vllm_check=ns.skip_vllm_check, reform=ns.reform,
                   docker=docker_side(ns, given.privileged), **given.options())


def parse_run(args: list[str]) -> tuple[argparse.Namespace, list[str]]:
    """A run's words (`RECIPE [OPTIONS] [-- EXTRA_VLLM_ARGS...]`) with the checks argparse cannot make;
    `watch` and `install-service` read theirs here too, so they converge what a run would."""
    own, extra = _split_extra(args)
    p = parser()
    ns, unknown = p.parse_known_args(own)
    if unknown:
        p.error(unknown_options(own, unknown, ns.recipe))
    if ns.solo and ns.ray is not None:  # no group can hold --solo with both
        p.error(f"argument {'--ray' if ns.ray else '--no-ray'}: not allowed with argument --solo")
    if ns.no_build and not (ns.setup or ns.build_only):
        p.error("argument --no-build: only with --setup or --build-only (it makes their build step use the image "
                "as it is; without them nothing is built anyway)")
    return ns, extra


def plan_run(ns: argparse.Namespace, extra: list[str], *, fetch: bool) -> Plan:
    """The named recipe's plan, its warnings printed; with `fetch`, `--apply-vllm-pr` patches missing
    from the cache are fetched first (the plan hashes them)."""
    from ..recipe import load_named

    recipe = load_named(ns.recipe, settings.recipes_dir())
    if fetch:
        from ..ops.vllm_pr import fetch_missing

        for note in fetch_missing(ns.apply):
            print(note)
    plan = make_plan(recipe, options_from(ns, extra))
    for warning in plan.warnings + ((vllm_check.SKIPPED,) if ns.skip_vllm_check else ()):
        print(f"Warning: {scrub(warning)}", file=sys.stderr)
    return plan


def plan_words(run_args: list[str]) -> Plan:
    """The plan of a run's own words (`RECIPE [RUN OPTIONS] [-- vLLM args]`), as watch and the service take them."""
    ns, extra = parse_run(run_args)
    if not ns.recipe:
        parser().error("name a recipe (see --list)")
    return plan_run(ns, extra, fetch=True)


def _run(args: list[str], inspect: bool = False) -> int:
    ns, extra = parse_run(args)
    if ns.list:
        return list_recipes(ns.json)
    if ns.show_env:
        return show_env(ns.config)
    if ns.discover:
        return discover_nodes(ns)
    if not ns.recipe:
        parser().print_usage(sys.stderr)
        print("Error: name a recipe (see --list)", file=sys.stderr)
        return 2
    if not (ns.dry_run or inspect or ns.download_only):
        _ask_engine_early()
    plan = plan_run(ns, extra, fetch=not (ns.dry_run or inspect))
    if inspect:
        return inspect_plan(plan, ns.json)
    if ns.dry_run:
        return dry_run(plan, ns.json)
    if ns.download_only:
        return download_only(plan, wait=not ns.no_wait)
    return execute(plan, build_only=ns.build_only, wait=not ns.no_wait)


def _ask_engine_early() -> None:
    """The local engine's version, runtimes and data root, which no run changes: asked in the background
    while the plan is made, so a no-op run does not wait for its slowest `docker` call."""
    from ..connect import Local
    from ..facts import cache as facts, docker

    facts.gather([lambda: docker.engine_facts(Local())])


def discover_nodes(ns: argparse.Namespace) -> int:
    """Scan, confirm by SSH, choose, save .env: always a fresh scan."""
    from ..cluster.discover import discover, write_env
    from ..config import env_file
    from ..connect import SshSettings
    from .discover_ask import choose

    found = discover(ns.interface, ns.cidr, SshSettings(trust_new_hosts=ns.trust_new_hosts))
    for c in found:
        print(f"  {c.ip:<16} {c.hostname or '-':<20} {c.status}")
    nodes, copy_hosts = choose(found, ns.yes)
    if not nodes:
        print("no confirmed nodes: nothing saved", file=sys.stderr)
        return 1
    path = ns.config or env_file(None)  # --discover may create the --config file
    write_env(path, nodes, copy_hosts)
    print(f"saved CLUSTER_NODES={','.join(nodes)} to {path}")
    return 0


def download_only(plan: Plan, *, wait: bool) -> int:
    """Only the download tasks: no Docker needed."""
    if not plan.models:
        print(f"{plan.recipe.id}: no HuggingFace model to download (no `model`, or a local path)")
        return 0
    targets = [f"download:{m.key}" for m in plan.models]
    if plan.mode == "cluster":
        targets += [f"weights:{m.key}@{node.target}" for m in plan.models for node in plan.nodes[1:]]
    return session.execute(session.Run([plan], targets, f"run-recipe {plan.recipe.id} --download-only", wait=wait))


def execute(plan: Plan, *, build_only: bool = False, wait: bool = True) -> int:
    """The run held by the session (lock, facts, preflight, doit); in the foreground, follow the server's logs."""
    from ..connect import Local
    from ..facts import docker
    from ..ops import launch

    target = [f"build:{plan.build.tag}"] if build_only else [f"launch:{plan.recipe.id}"]
    if build_only and plan.mode == "cluster":
        target += [f"image:{plan.build.tag}@{node.target}" for node in plan.nodes[1:]]
    run = session.Run([plan], target, f"run-recipe {plan.recipe.id}", setup=plan.options.setup, wait=wait,
                      engine=True)
    code = session.execute(run)
    if code or build_only or plan.options.daemon:
        return code
    runner = Local()
    running = [c for c in docker.containers(runner, recipe=plan.recipe.id) if c.running]
    return launch.follow(runner, plan, running[0].id) if running else 1


def list_recipes(as_json: bool) -> int:
    from ..plan import gpus_asked
    from ..recipe import catalogue
    from ..sizes import human_bytes

    rows: list[dict[str, Any]] = []
    for item in catalogue(settings.recipes_dir()):
        r = item.recipe
        rows.append({"id": item.id, "file": str(item.path), "error": item.error} if r is None else
                    {"id": item.id, "name": r.name, "model": r.model, "container": r.container,
                     "mode": r.mode, "nodes": 1 if r.solo_only else max(gpus_asked(r), 2 if r.cluster_only else 1),
                     "cached_bytes": cached_bytes(r), "mods": list(r.mods), "description": r.description,
                     "file": str(item.path)})
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(f"no recipes in {settings.recipes_dir()}")
        return 0
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from ..masking import printable

    # recipes are other people's text: no rich markup ([/bold], [link=...]), emoji codes or escape sequences
    table = Table(title=Text(f"Recipes in {settings.recipes_dir()}"))
    for col in ("recipe", "name", "model", "container", "mode", "nodes", "cached", "mods"):
        table.add_column(col, overflow="fold")
    for row in rows:
        if "error" in row:
            cells = [row["id"], Text(printable(f"broken: {row['error']}"), style="red"), "", "", "", "", "", ""]
        else:
            nodes = str(row["nodes"]) if row["mode"] != "either" or row["nodes"] == 1 else f"1 or {row['nodes']}"
            cells = [row["id"], row["name"], row["model"] or "-", row["container"], row["mode"], nodes,
                     human_bytes(row["cached_bytes"]) if row["cached_bytes"] else "-",
                     ", ".join(Path(m).name for m in row["mods"]) or "-"]
        table.add_row(*(Text(printable(c)) if isinstance(c, str) else c for c in cells))
    Console(width=160, markup=False, emoji=False, highlight=False).print(table)
    return 0


def cached_bytes(recipe: Any) -> int | None:
    """Size of the recipe's model in the HF cache when complete there (stat only, no network)."""
    from ..stacks.budget import model_bytes
    from ..plan import Options, main_model

    try:
        model, _ = main_model(recipe, Options())
    except RunRecipeError:
        return None  # a model or revision no hub can have: nothing to count (lint and a run say why)
    return model_bytes(model) if model else None


def show_env(config: Path | None) -> int:
    from ..config import read_env
    from ..masking import mask, remember_secret
    from ..stacks.files import key_variables

    env = read_env(config)  # nothing checked: --show-env shows a bad value as it is
    path, values = env.env_path, env.values
    for name in key_variables(settings.project_root() / "stacks") & set(values):
        remember_secret(values[name])  # a stack's gateway key, whatever its variable is called
    print(f"# {path}" + ("" if path.is_file() else " (not found: solo mode unless -n is given)"))
    for key, value in values.items():
        print(f"{key}={mask(key, value)}")
    return 0

