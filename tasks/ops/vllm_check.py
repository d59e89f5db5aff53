"""The check step: ask the image's own vLLM whether it accepts each node's `vllm serve` argv.

The recipe's image (its mods image when there are mods, so mod-added flags, templates and parser
plugins count) runs templates/vllm_checker.py with its own python, VLLM_TARGET_DEVICE=cpu, no GPU
and no network, all argvs of the run in one container. vLLM's import dominates the cost (12-16 s on
2 cores), so the verdict is kept under the state folder keyed by the image ID and the argvs' hash:
a re-run with neither changed asks nothing. Images the checker cannot use (no python, no vLLM,
a release too different) give one "cannot check" line and the run goes on.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from .. import settings, state, vllm_args
from ..errors import RunError
from ..connect import Connector
from ..plan import Plan
from . import answers as steps

CHECKER = settings.CODE_ROOT / "templates" / "vllm_checker.py"
RESULT_MARK = "RUNRECIPE-VLLM-CHECK "
TIMEOUT = 900.0  # vLLM's import takes 12-16 s on 2 idle cores; a loaded machine is much slower
ENV = {"VLLM_TARGET_DEVICE": "cpu", "CUDA_VISIBLE_DEVICES": ""}
# a parser plugin is a file the recipe names: code. The image check loads it inside its sealed container;
# the venv check runs on this machine, so it never hands the plugin to vLLM: option -> the name it registers
PLUGINS = {"--tool-parser-plugin": "--tool-call-parser", "--reasoning-parser-plugin": "--reasoning-parser"}
VENV_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ")  # what a venv's python needs; no secret, no HOME
LASTING = ("accepted", "could not check")  # verdicts that hold while image and argvs do
SKIPPED = ("--skip-vllm-check: the command is not checked against the image's vLLM (unknown or misspelt "
           "flags, bad values, a missing chat template and unknown backend or parser names show up only "
           "when the server starts, after every copy)")


@dataclass(frozen=True)
class Target:
    """One argv to check: the words after `vllm serve`, where it runs, and the recipe it comes from."""

    recipe: str
    where: str
    argv: tuple[str, ...]


@dataclass(frozen=True)
class Finding:
    level: str          # "error" (vLLM refuses it) or "warning" (a name only the engine checks at start)
    recipe: str
    where: str
    flag: str
    message: str

    def text(self, version: str, where: bool = True) -> str:
        flag = f"{self.flag}: " if self.flag else ""
        verb = "refuses" if self.level == "error" else "may refuse at start"
        return f"{self.recipe}{f' ({self.where})' if where else ''}: vLLM {version} {verb} {flag}{self.message}"


@dataclass(frozen=True)
class Verdict:
    version: str
    cannot: str = ""                     # why the checker could not run; empty when it did
    findings: tuple[Finding, ...] = field(default=())
    transient: bool = False              # no answer this time (timeout, lost node): not kept as done

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "error"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == "warning"]

    def lines(self, image: str) -> list[str]:
        """What a person reads: the cannot-check line, or one line per finding."""
        if self.cannot:
            which = f"vLLM {self.version}" if self.version != "?" else "the vLLM"
            return [f"cannot check with {which} in {image}: {self.cannot}"]
        return [f.text(self.version, where=False) for f in self.findings]


def targets(plan: Plan) -> list[Target]:
    """Every node script's serve argv, as --dry-run shows them: solo, or each node's Ray/native command."""
    from ..cluster.roles import backend, native_command, ray_command

    rid = plan.recipe.id
    if plan.mode != "cluster":
        commands = [("solo", plan.vllm)]
    elif backend(plan.options.ray) == "ray":
        commands = [(f"{n.target} (ray)", ray_command(plan.vllm)) for n in plan.nodes]
    else:
        count, port = len(plan.nodes), plan.options.master_port
        commands = [(f"{n.target} (native, rank {rank})",
                     native_command(plan.vllm, rank, count, plan.head.host, port)) for rank, n in enumerate(plan.nodes)]
    return [Target(rid, where, cmd.serve_args) for where, cmd in commands if cmd.serve_args is not None]


def key(image_id: str, argvs: Sequence[Target]) -> str:
    """What the verdict depends on: the image, the argvs and the checker itself."""
    data = json.dumps([image_id, [list(t.argv) for t in argvs], CHECKER.read_text()])
    return hashlib.sha256(data.encode()).hexdigest()


def checker_argv(python: Sequence[str]) -> list[str]:
    return [*python, "-c", CHECKER.read_text()]


def docker_argv(image: str, mounts: Sequence[tuple[str, str]] = ()) -> list[str]:
    """`docker run` of the checker in `image`: no network, no GPU, read-only mounts (host, container path)
    of what the server sees, so a chat template in a mounted folder is found where it will be."""
    env = [a for k, v in ENV.items() for a in ("-e", f"{k}={v}")]
    vols = [a for host, inside in mounts for a in ("-v", f"{host}:{inside}:ro")]
    return ["docker", "run", "--rm", "-i", "--network", "none", *env, *vols, "--entrypoint", "python3",
            image, *checker_argv([])]


def in_image(runner: Connector, image: str, argvs: Sequence[Target], mounts: Sequence[tuple[str, str]] = ()) -> Verdict:
    """One container of `image` on the runner's node checks every argv."""
    data = json.dumps([list(t.argv) for t in argvs]).encode()
    try:
        result = runner.feed(docker_argv(image, mounts), data, timeout=TIMEOUT, check=False)
    except RunError as exc:  # a timeout or a lost node: unchecked, and asked again next run
        return Verdict("?", f"no answer: {str(exc).splitlines()[0]}", transient=True)
    if result.exit_code in (125, 126, 127) and RESULT_MARK not in result.stdout:
        if re.search(r"executable file not found|no such file or directory", result.stderr, re.I):
            return Verdict("?", "the image has no python3, so no vLLM to ask")
        raise RunError("the vLLM check could not start a container", node=runner.node,
                       exit_code=result.exit_code, tail=result.stderr)
    return read(result.stdout, result.stderr, result.exit_code, argvs)


def in_venv(venv: Path, argvs: Sequence[Target]) -> Verdict:
    """The same check with the vLLM of a local venv (`lint --vllm --venv`): advisory, no image.

    It runs on this machine, so it gets what no recipe can abuse: argvs without parser plugins (each
    one a warning that it was not loaded), an environment of PATH and locale only (no token, no
    secret-named variable) and an empty HOME of its own (no ~/.cache/huggingface/token)."""
    python = venv / "bin" / "python"
    if not python.is_file():
        return Verdict("?", f"{python} does not exist (give the folder of a venv with vLLM installed)")
    split = [vllm_args.split_options(t.argv, *PLUGINS) for t in argvs]
    data = json.dumps([list(kept) for kept, _ in split])
    with tempfile.TemporaryDirectory(prefix="rr-lint-home-") as home:
        env = {k: os.environ[k] for k in VENV_ENV if k in os.environ} | ENV | {"HOME": home}
        try:
            proc = subprocess.run(checker_argv([str(python)]), input=data, capture_output=True, text=True,
                                  timeout=TIMEOUT, env=env)
        except subprocess.TimeoutExpired:
            return Verdict("?", f"no answer within {TIMEOUT:.0f} s", transient=True)
    verdict = read(proc.stdout, proc.stderr, proc.returncode, argvs)
    return unplugged(verdict, argvs, [taken for _, taken in split])


def unplugged(verdict: Verdict, argvs: Sequence[Target], taken: Sequence[Sequence[tuple[str, str]]]) -> Verdict:
    """Each plugin left out is a warning; the parser name it would register is not judged without it."""
    findings = list(verdict.findings)
    for target, plugins in zip(argvs, taken):
        for option, path in plugins:
            names = PLUGINS[option]
            findings = [f for f in findings if not (f.recipe == target.recipe and f.where == target.where
                                                    and f.flag == names)]
            findings.append(Finding("warning", target.recipe, target.where, option,
                                    f"{path} was not loaded, so {names} was not checked: --venv runs no recipe "
                                    "code on this machine (the check in the recipe's own image loads it, in a container "
                                    "with no network and no secret)"))
    return replace(verdict, findings=tuple(findings))


def read(stdout: str, stderr: str, code: int, argvs: Sequence[Target]) -> Verdict:
    """The checker's marked JSON line as a Verdict; anything else is a cannot-check with the output's tail."""
    line = next((ln for ln in stdout.splitlines() if ln.startswith(RESULT_MARK)), "")
    if not line:
        tail = (stderr or stdout).strip().splitlines()[-1:] or [f"exit status {code}"]
        return Verdict("?", f"the checker gave no answer (exit status {code}): {tail[0][:300]}", transient=True)
    data = json.loads(line[len(RESULT_MARK):])
    if data.get("cannot"):
        return Verdict(data["version"], data["cannot"])
    findings = []
    for target, res in zip(argvs, data["results"]):
        findings += [Finding("error", target.recipe, target.where, e.get("flag") or "", e["message"])
                     for e in res.get("errors", [])]  # every flag vLLM refuses, not only the first
        findings += [Finding("warning", target.recipe, target.where, w["flag"], w["message"])
                     for w in res.get("warnings", [])]
    return Verdict(data["version"], "", tuple(findings))


# -- the graph's step -----------------------------------------------------------------------------------

def record_path(recipe_id: str) -> Path:
    return state.record_file("checks", recipe_id)


def read_record(recipe_id: str) -> dict | None:
    return state.read_json(record_path(recipe_id))


def answer(runner: Connector, plan: Plan) -> steps.Answer:
    """Noop when the last verdict was for this image ID and these argvs and did not refuse them."""
    from .served import image_ref

    image = image_ref(runner, plan)
    record = read_record(plan.recipe.id)
    if record and record.get("key") == key(image, targets(plan)) and record.get("verdict") in LASTING:
        return steps.Noop(f"vLLM {record['version']} in {image[:19]} {record['verdict']} these argvs before")
    return steps.Change(f"vLLM in {image[:19]} has not checked these argvs")


def run(runner: Connector, plan: Plan) -> dict[str, str]:
    """The check action: report warnings and cannot-check lines, refuse (RunError) on any error."""
    from ..report import Warn, emit, say
    from .served import hf_mounts, image_ref

    image = image_ref(runner, plan)
    argvs = targets(plan)
    digest = key(image, argvs)
    # asked again after a refusal too: a chat template added to a mounted folder may have fixed it
    mounts = [(host, inside) for host, inside, *_ in (m.split(":") for m in hf_mounts(plan))]
    verdict = in_image(runner, image, argvs, [m for m in mounts if Path(m[0]).is_dir()])
    shown = f"{plan.build.tag}" + (" with its mods" if plan.mods else "")
    for finding in verdict.warnings:
        emit(Warn(finding.text(verdict.version)))
    if verdict.cannot:
        emit(Warn(f"{verdict.lines(shown)[0]}; the run goes on unchecked"))
    status = ("refused" if verdict.errors else "accepted" if not verdict.cannot
              else "no answer" if verdict.transient else "could not check")
    write_record(plan.recipe.id, image, digest, verdict, status)
    if verdict.errors:
        lines = "\n".join(f"  {f.text(verdict.version)}" for f in verdict.errors)
        raise RunError(f"the vLLM in {shown} refuses the command of {plan.recipe.path}; nothing was copied "
                       f"or started:\n{lines}\nFix the recipe (or its mods), or pass --skip-vllm-check to "
                       "start it anyway")
    if not verdict.cannot:
        say(f"vLLM {verdict.version} in {shown} accepts the command ({len(argvs)} node argv(s))")
    return {"vllm": verdict.version, "verdict": status}


def write_record(recipe_id: str, image: str, digest: str, verdict: Verdict, status: str) -> None:
    data = {"recipe": recipe_id, "image": image, "key": digest, "version": verdict.version, "verdict": status,
            "cannot": verdict.cannot, "findings": [asdict(f) for f in verdict.findings],
            "checked": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    state.write_json(record_path(recipe_id), data)

