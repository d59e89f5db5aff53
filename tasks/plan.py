"""A Plan: the recipe plus overrides, mode, nodes and the rendered launch script.

Plain data computed without touching any machine; `--dry-run` prints it, the
graph turns it into doit tasks, and the steps act on it.
"""
from __future__ import annotations

import functools
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from . import (
    build_spec,
    config,
    container_flags,
    hf_names,
    masking,
    memo,
    mod_sources,
    mod_spec,
    render,
    settings,
    vllm_args,
)
from .errors import ConfigError, ModeError, RecipeError, RenderError
from .nodes import LOCAL, Node, is_local_address, is_loopback, parse_list, resolve
from .recipe import Recipe

# The parameters run-recipe's named override flags set (--port, --host, --tp, --gpu-mem, --max-model-len).
OVERRIDE_FLAGS = ("port", "host", "tensor_parallel", "gpu_memory_utilization", "max_model_len")
IMAGE_REF = re.compile(r"[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(@sha256:[0-9a-f]{64})?"
                       r"|sha256:[0-9a-f]{64}|[0-9a-f]{12,64}")
BASE_DOCKER_ENV = {"NCCL_IGNORE_CPU_AFFINITY": "1", "PYTORCH_CUDA_ALLOC_CONF": "expandable_segments:True"}


@dataclass(frozen=True)
class Options:
    """What the user asked for, beyond the recipe."""

    overrides: Mapping[str, str] = field(default_factory=dict)
    extra_args: tuple[str, ...] = ()
    solo: bool = False
    nodes: str | None = None          # the -n text
    nodes_flag: str = "-n/--nodes"    # how the user gave it, for messages (doit: nodes=)
    config: Path | None = None        # --config FILE (default: <project>/.env)
    container: str | None = None      # -t IMAGE
    name: str | None = None           # --name
    nccl_debug: str | None = None
    setup: bool = False               # build (and download) before launching
    download: bool = False            # include the weights download tasks (--setup, --download-only)
    force_build: bool = False
    no_build: bool = False            # --no-build: the build step takes the image as it is on the head, never builds it
    force_download: bool = False
    verify: bool = False              # hash every blob while checking the weights
    revision: str | None = None       # --revision: overrides the recipe's revision
    ray: bool = False                 # --ray (default and --no-ray: native multi-node, no Ray)
    eth_if: str = ""                  # --eth-if or .env ETH_IF (empty: the interface routing to the nodes)
    ib_if: str = ""                   # --ib-if or .env IB_IF (empty: from ibdev2netdev when present)
    master_port: int = 29501          # --master-port or .env MASTER_PORT
    trust_new_hosts: bool = False     # record unknown SSH host keys instead of refusing them
    daemon: bool = False
    restart: bool = False
    privileged: bool = True           # --non-privileged or .env NON_PRIVILEGED=1 turn it off
    docker: container_flags.DockerSide = field(default_factory=container_flags.DockerSide)  # -e, -p, -v, ...
    ready_timeout: float = 1800.0
    force: bool = False               # --force: start even when the memory guard says it does not fit
    # --apply-mod / --apply-vllm-pr in command-line order: ("mod", Path) or ("pr", mod_spec.PullRequest)
    apply: tuple[tuple[str, Any], ...] = ()
    stack: str = ""                   # the stack this run is an entry of (labels its containers)
    skip_vllm_check: bool = False     # --skip-vllm-check: no check:<recipe> step (vllm_check.SKIPPED says what)
    reform: bool = False              # the watcher re-forms the run: never start it over a `run-recipe stop`
    # the .env and the settings it gave, read once by the entry point (config.read_settings)
    settings: config.Settings | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Model:
    """A HuggingFace repo the server needs in the cache: the recipe's model or one its command names."""

    repo: str
    revision: str = "main"             # branch, tag or commit
    patterns: tuple[str, ...] = ()    # allow-patterns (the recipe's `files`)
    role: str = "model"               # "model", or "extra" for drafts and tokenizers

    @property
    def key(self) -> str:
        return f"{self.repo}@{self.revision}"


@dataclass(frozen=True)
class Plan:
    recipe: Recipe
    options: Options
    mode: str                          # "solo" | "cluster"
    nodes: tuple[Node, ...]            # head first
    params: Mapping[str, Any]
    command: str                       # rendered, with extra args
    argv: tuple[str, ...]              # the command's words, as the shell will see them
    vllm: vllm_args.Command            # the same command as data: cluster roles edit this, never the text
    script: str
    build: build_spec.BuildSpec
    mods: tuple[mod_spec.Mod, ...]
    container_name: str
    docker_env: Mapping[str, str]
    port: int
    served_model: str
    models: tuple[Model, ...] = ()
    local_mounts: tuple[str, ...] = ()  # local model folders, mounted at the same path
    warnings: tuple[str, ...] = ()
    copy_hosts: tuple[Node, ...] | None = None  # .env COPY_HOSTS: where image and weights are copied to

    @property
    def head(self) -> Node:
        return self.nodes[0]

    @property
    def cpu(self) -> bool:
        """vLLM's CPU build (the recipe's build_args hold --cpu): no GPU is needed, none is asked for."""
        return self.build.cpu

    @property
    def api_key(self) -> str:
        """The key the server will want on /v1/ paths, as vLLM picks it: its --api-key, else VLLM_API_KEY
        (from -e, then the recipe's env); "" when it wants none. Readiness and watch must present it."""
        return (self.vllm.option("--api-key") or container_flags.secret_env(self.options.docker).get("VLLM_API_KEY")
                or str(self.recipe.env.get("VLLM_API_KEY") or ""))

    @property
    def loopback_only(self) -> bool:
        """The server listens on loopback only (a stack's entry behind its gateway): the head reaches it there."""
        return is_loopback(self.vllm.option("--host"))

    @property
    def endpoint(self) -> str:
        host = self.vllm.option("--host") or self.params.get("host", "0.0.0.0")
        shown = "localhost" if self.head.local and host in ("0.0.0.0", "::", "") else (
            self.head.host if host in ("0.0.0.0", "::", "") else host)
        return f"http://{shown}:{self.port}/v1"


def dotenv(options: Options) -> config.Settings:
    """The run's .env (path and values): the Settings its entry point read once, else read here (an
    Options made without them, e.g. by a test)."""
    return options.settings if options.settings is not None else config.read_env(options.config)


def choose_nodes(recipe: Recipe, options: Options) -> tuple[str, tuple[Node, ...], list[str]]:
    """Mode, nodes and warnings: --solo, else -n, else .env CLUSTER_NODES, else solo; check the recipe
    allows it. One listed node means solo, as with the origin: on this machine, whatever it names."""
    nodes: tuple[Node, ...] = ()
    source = options.nodes_flag
    if not options.solo:
        if options.nodes is not None:
            nodes = parse_list(options.nodes, source)
        else:
            env = dotenv(options)
            source = f"{env.env_path}: CLUSTER_NODES"
            nodes = env.cluster_nodes()
    mode = "cluster" if len(nodes) >= 2 else "solo"
    warnings = []
    if len(nodes) == 1 and not _is_this_machine(nodes[0]):
        warnings.append(f"{source} lists one node, {nodes[0].target}, which is not this machine: one node means "
                        "solo mode, so the model is served HERE. To serve it there, run run-recipe on "
                        f"{nodes[0].host}; for a cluster, list this machine first and the others after it")
    slug = recipe.id
    if mode == "solo" and recipe.cluster_only:
        raise ModeError(
            f"Recipe '{recipe.name}' requires cluster mode.\n"
            "This model is too large to run on a single node.\n\n"
            "Options:\n"
            f"  1. Specify nodes directly:  ./run-recipe.sh {slug} -n node1,node2\n"
            "  2. Auto-discover and save:  ./run-recipe.sh --discover\n"
            f"     Then run:                ./run-recipe.sh {slug}")
    if mode == "cluster" and recipe.solo_only:
        raise ModeError(
            f"Recipe '{recipe.name}' runs on a single node only (solo_only), "
            f"but {len(nodes)} nodes were given.\n\n"
            "Options:\n"
            f"  1. Run it alone:            ./run-recipe.sh {slug} --solo\n"
            f"  2. Pick one node:           ./run-recipe.sh {slug} -n {nodes[0].target}")
    return mode, (nodes if mode == "cluster" else (LOCAL,)), warnings


@functools.lru_cache(maxsize=None)
def _is_this_machine(node: Node) -> bool:
    """Cached: `doit list` plans every recipe with the same node list (one name lookup, not one each)."""
    try:
        return is_local_address(resolve(node))
    except ConfigError:
        return False


def copy_hosts(options: Options, mode: str) -> tuple[tuple[Node, ...] | None, list[str]]:
    """.env COPY_HOSTS (the addresses copies go to, e.g. another network in a mesh), and warnings.

    It belongs to the .env's CLUSTER_NODES: with -n, or solo, it is not used."""
    env = dotenv(options)
    path, text = env.env_path, env.values.get("COPY_HOSTS", "").strip() if mode == "cluster" else ""
    if not text:
        return None, []
    if options.nodes is not None:
        return None, [f"{path}: COPY_HOSTS is not used with -n (it belongs to the .env's CLUSTER_NODES); "
                      "copies go to the -n workers"]
    return parse_list(text, f"{path}: COPY_HOSTS"), []


def make_plan(recipe: Recipe, options: Options, check_shell: bool = True) -> Plan:
    """Everything about the run that can be known without touching a machine.

    check_shell=False leaves `bash -n` of the script to the caller (lint reports it with a line)."""
    masking.remember(recipe.env)  # a secret-named env value of the recipe is scrubbed wherever a person sees it
    mode, nodes, node_warnings = choose_nodes(recipe, options)
    container_flags.check_mode(options.docker, mode)
    copy_to, copy_warnings = copy_hosts(options, mode)
    warnings = list(recipe.warnings) + node_warnings + copy_warnings
    params: dict[str, Any] = dict(recipe.defaults)
    if mode == "solo":
        params["tensor_parallel"] = 1
    params.update(options.overrides)
    main, local_mounts = main_model(recipe, options)
    vllm = _vllm_command(recipe, options, mode, params, main, warnings)
    command, argv = vllm.text(), vllm.argv
    port = _checked_port(recipe, vllm)
    name = _checked_name(recipe, options)
    build = _checked_build(recipe, options)
    mod_list, mod_warnings = mod_sources.plan_mods(recipe, options.apply)
    warnings += mod_warnings
    script = render.render_template(
        "launch.sh.j2", recipe_name=recipe.name, recipe_file=str(recipe.path), mode=mode,
        env=dict(recipe.env), command=command, exec_ok=not vllm.has_operators)
    if check_shell:
        check_bash(script, recipe.path)
    docker_env = BASE_DOCKER_ENV | container_flags.public_env(options.docker)  # secret -e: container_create
    if options.nccl_debug:
        docker_env["NCCL_DEBUG"] = options.nccl_debug
    extras = tuple(Model(repo, role="extra") for repo in vllm_args.model_refs(argv)
                   if not main or repo != main.repo)
    plan = Plan(
        recipe=recipe, options=options, mode=mode, nodes=nodes, params=params,
        command=command, argv=argv, vllm=vllm, script=script, build=build, mods=mod_list,
        container_name=name,
        docker_env=docker_env, port=container_flags.host_port(options.docker, port), served_model=vllm.served_model,
        models=((main,) if main else ()) + extras, local_mounts=local_mounts, warnings=tuple(warnings),
        copy_hosts=copy_to)
    masking.remember_secret(plan.api_key)  # from the command or the recipe's env too: never in what we print
    return plan


def _vllm_command(recipe: Recipe, options: Options, mode: str, params: dict[str, Any], main: Model | None,
                  warnings: list[str]) -> vllm_args.Command:
    """The recipe's command as argv after substitution, with the run's extra arguments and revision;
    warns (into `warnings`) about unused overrides, repeated options and a Ray flag that cannot hold."""
    extra = list(options.extra_args)
    try:
        used = set(render.placeholders(recipe.command))
        vllm = vllm_args.parse(recipe.command, params)
    except RenderError as exc:
        raise RenderError(f"{recipe.path}: command: {exc}") from None
    if main and main.revision != "main" and vllm.option("--revision") is None:
        extra += ["--revision", main.revision]  # vLLM then loads that snapshot, offline
    duplicates = vllm_args.duplicates(vllm, extra)
    vllm = vllm.with_args(extra)
    executor = vllm.option(vllm_args.EXECUTOR)
    if mode == "solo":
        vllm = vllm.without(vllm_args.EXECUTOR)  # solo uses none, whatever the recipe or -- named
        if options.ray:
            warnings.append("--ray is for a cluster: this run is solo (one node), so vLLM runs without Ray")
    elif options.ray and executor not in (None, "ray"):  # cluster.ray_command sets it to ray
        warnings.append(f"--ray: the command's {vllm_args.EXECUTOR} {executor} is replaced by ray (Ray starts "
                        f"the group on every node); run without --ray for a native cluster, which drops the flag")
    for key in options.overrides:
        if key not in used:
            warnings.append(f"override '{key}' is not used by the command of {recipe.path.name} "
                            f"(its placeholders: {', '.join(sorted(used)) or 'none'})")
    for dup in duplicates:
        warnings.append(f"extra argument '{dup}' repeats an option already in the command; "
                        "vLLM uses the last value, so the extra argument wins")
    return vllm


def _checked_port(recipe: Recipe, vllm: vllm_args.Command) -> int:
    port_text = vllm.option("--port") or "8000"
    if not re.fullmatch(r"[0-9]{1,5}", port_text) or not 0 < int(port_text) < 65536:
        raise ConfigError(f"{recipe.path}: the command's --port is '{port_text}', not a port number (1-65535)")
    return int(port_text)


def _checked_name(recipe: Recipe, options: Options) -> str:
    name = options.name or default_container_name(recipe)
    if not re.fullmatch(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}", name):
        raise ConfigError(f"--name '{name}' is not a valid container name (letters, digits, _ . -; "
                          "starting with a letter or digit)")
    return name


def _checked_build(recipe: Recipe, options: Options) -> build_spec.BuildSpec:
    """The image's build spec; a CPU build with --ray is refused here, before vLLM would refuse it at start."""
    container = options.container or recipe.container
    if not IMAGE_REF.fullmatch(container):
        source = "-t/--container" if options.container else f"{recipe.path}: container"
        raise ConfigError(f"{source}: '{container}' is not an image reference (e.g. vllm-node or "
                          "registry/name:tag)")
    build = build_spec.build_spec(container, recipe.build_args, settings.docker_dir(), f"{recipe.path}")
    if build.cpu and options.ray:  # the engine would accept the command, then stop at its start
        raise ModeError(f"--ray (doit: ray=1) cannot run {recipe.path}: its build_args hold {build_spec.CPU_FLAG}, and "
                        "vLLM's CPU build refuses Ray when its engine starts (\"current platform cpu does not "
                        "support ray\"); nothing was started. Run it without --ray: a cluster then runs native "
                        "multi-node (each node runs vLLM with its --node-rank)")
    return build


def main_model(recipe: Recipe, options: Options) -> tuple[Model | None, tuple[str, ...]]:
    """The recipe's model as a download, or as a local folder to mount (model_path or a path as model)."""
    if recipe.model_path or (recipe.model and hf_names.is_local_path(recipe.model)):
        path = Path(recipe.model_path or recipe.model).expanduser()
        if not path.is_absolute():
            path = (recipe.path.parent / path).resolve()
        return None, (str(path),)
    if not recipe.model:
        return None, ()
    if not hf_names.is_repo_id(recipe.model):
        raise RecipeError(f"{recipe.path}: model: '{recipe.model}' is neither a HuggingFace repo id (org/name, "
                          "e.g. Qwen/Qwen3.6-35B-A3B-FP8) nor a local path (starting with /, . or ~)")
    if options.revision:
        revision = _revision(options.revision, "--revision")
    else:
        revision = _revision(recipe.revision, f"{recipe.path}: revision") if recipe.revision else "main"
    return Model(recipe.model, revision, recipe.files), ()


# git check-ref-format's rules for a branch or tag name, which every hub revision follows
_REVISION_CHARS = re.compile(r"[^\x00-\x20\x7f~^:?*\[\\]{1,255}\Z")
_REVISION_BANNED = ("..", "//", "@{", "/.", ".lock/")


def _revision(text: str, source: str) -> str:
    """Refuse a revision git could not name before it reaches a download, a path in refs/ or vLLM's --revision.

    A leading '-' would read as an option, '..' or '/.' could climb out of the cache's refs/ folder."""
    if (not _REVISION_CHARS.match(text) or text == "@" or text.startswith(("-", "/", "."))
            or text.endswith(("/", ".", ".lock")) or any(bad in text for bad in _REVISION_BANNED)):
        raise ConfigError(f"{source}: '{text}' is not a branch, tag or commit name (git's ref-name rules: no "
                          "spaces or control characters, no '..', '@{', '~', '^', ':', '?', '*', '[' or '\\', "
                          "no leading '-' or '.', no trailing '/', '.' or '.lock', not '@' alone)")
    return text


def check_bash(script: str, source: Path | str, what: str = "the rendered script") -> None:
    """A script must parse as bash before anything runs (an unclosed `$(` would fail only in the container).
    A text that passed once is in the memo: the re-run of an unchanged recipe starts no bash."""
    passed = memo.key("bash -n", script)
    if memo.get(passed) is not None:
        return
    try:
        res = bash_n(script, timeout=10)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return  # no bash here: the container's bash will say it
    if res.returncode:
        detail = res.stderr.strip().splitlines()[-1:] or ["syntax error"]
        raise RenderError(f"{source}: command: {what} is not valid bash: {detail[0].replace('bash: ', '')}")
    memo.put(passed, "")


def bash_n(script: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """`bash -n` of a script, read from a file: a pipe is fed 512 bytes per poll, which took 1 s for 1 MB."""
    with tempfile.TemporaryFile() as source:
        source.write(script.encode())
        source.seek(0)
        return subprocess.run(["bash", "-n"], stdin=source, capture_output=True, text=True, errors="replace",
                              timeout=timeout)


def bash_problem(script: str, timeout: float) -> tuple[str, str]:
    """(bash's complaint without script line numbers, the offending script text) or ("", "")."""
    try:
        proc = bash_n(script, timeout)
    except FileNotFoundError:
        return "", ""  # no bash here: nothing to check against
    except subprocess.TimeoutExpired:
        return f"bash -n did not finish in {timeout:g} s", ""
    if proc.returncode == 0:
        return "", ""
    problems, source = [], ""
    for raw in proc.stderr.splitlines():
        text = re.sub(r"^(?:bash: )?(?:line \d+: )?", "", raw.strip())
        quoted = re.fullmatch(r"`(.*)'", text)
        if quoted:
            source = source or quoted.group(1).strip().rstrip("\\").strip()
        elif text:
            problems.append(text)
    return "; ".join(problems) or f"exit code {proc.returncode}", source


def gpus_asked(recipe: Recipe) -> int:
    """tp * pp * dp of the command with its defaults: one GPU per DGX Spark, so the nodes a cluster run needs."""
    try:
        sizes = vllm_args.parse(recipe.command, dict(recipe.defaults)).parallel_sizes()
    except RenderError:
        return 1
    total = 1
    for value in sizes.values():
        total *= int(value) if value.isascii() and value.isdigit() and int(value) > 0 else 1
    return total


def default_container_name(recipe: Recipe) -> str:
    return "runrecipe-" + re.sub(r"[^A-Za-z0-9_.-]+", "-", recipe.id).strip("-")


def parse_overrides(pairs: list[str], source: str) -> dict[str, str]:
    """`key=value` items from -o or doit's command line; keys are placeholder names."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise ConfigError(f"{source}: '{pair}' is not key=value with a parameter name as key")
        out[key] = value
    return out

