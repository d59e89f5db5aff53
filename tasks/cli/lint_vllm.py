"""`run-recipe lint --vllm [IMAGE]` / `--venv PATH`: the check step over the catalogue, without running anything.

Every recipe's serve argvs (solo, and a two-node cluster in Ray and native mode where the recipe
allows it; never Ray for a CPU build, which refuses it) go to vLLM's own parser: grouped by image,
one container per image with all its argvs, or all to a local venv's vLLM. With no IMAGE each recipe
is checked in its own image (its mods image when applied on this machine), which is the verdict a
run would get. Against another image or a venv the check is advisory: what only the recipe's own
build or mods provide (flags of a patched vLLM, a chat template a mod places) is reported as a
warning, not an error.
"""
from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

from .. import build_spec, settings
from ..errors import RunRecipeError
from ..facts import docker
from ..ops import vllm_check
from ..plan import Options, Plan, make_plan
from ..connect import Local

# flags that only the forked vLLM of a Dockerfile adds (the stock parser refuses them)
PATCHED_BUILD_FLAGS = {"Dockerfile.mxfp4": ("--mxfp4-backend", "--mxfp4-layers")}
LINT_NODES = "198.18.0.1,198.18.0.2"  # a two-node cluster for the argvs only: nothing is contacted


def plans_of(paths: list[Path]) -> tuple[list[Plan], list[str]]:
    """Each recipe's plans in every mode it allows, and the recipes that could not be planned (lint says why)."""
    from ..recipe import catalogue, load_named, path_kind

    folders = [p for p in paths if path_kind(p) == "dir"]
    items = [i for p in folders for i in catalogue(p)]
    recipes = [i.recipe for i in items if i.recipe] + [load_named(str(p), settings.recipes_dir())
                                                      for p in paths if p not in folders]
    skipped = [f"{i.id}: {i.error}" for i in items if not i.recipe]
    plans: list[Plan] = []
    for recipe in recipes:
        backends = (False,) if build_spec.is_cpu(recipe.build_args) else (True, False)  # CPU builds refuse Ray
        modes = ([Options(solo=True)] if not recipe.cluster_only else []) + \
            ([Options(nodes=LINT_NODES, ray=ray) for ray in backends] if not recipe.solo_only else [])
        for options in modes:
            try:
                plans.append(make_plan(recipe, options, check_shell=False))
            except RunRecipeError as exc:
                skipped.append(f"{recipe.path}: {str(exc).splitlines()[0]}")
    return plans, skipped


def own_image(runner: Local, plan: Plan) -> str | None:
    """The image ID a run of the plan would check in, when it is on this machine."""
    from ..ops.served import image_ref

    try:
        return image_ref(runner, plan)
    except RunRecipeError:
        return None


def advisory(verdict: vllm_check.Verdict, plans: dict[str, Plan]) -> vllm_check.Verdict:
    """Not the recipe's own image: patched-build flags and mod-placed templates become warnings."""
    findings = []
    for f in verdict.findings:
        plan = plans[f.recipe]
        patched = f.flag in PATCHED_BUILD_FLAGS.get(plan.build.dockerfile, ())
        template = f.flag == "--chat-template"
        by_mod = bool(plan.mods) and (template or f.message.startswith("unrecognized arguments"))
        if f.level == "error" and (patched or by_mod):
            why = (f"needs {plan.build.dockerfile}'s vLLM" if patched else
                   f"a mod of the recipe may {'place' if template else 'add'} it")
            f = replace(f, level="warning", message=f"{f.message} ({why})")
        findings.append(f)
    return replace(verdict, findings=tuple(findings))


def run(image: str, venv: Path | None, paths: list[Path]) -> int:
    """Check every recipe under `paths` in its own image, in `image`, or with `venv`'s vLLM; print; 1 on errors."""
    start = time.monotonic()
    plans, skipped = plans_of(paths)
    by_id = {plan.recipe.id: plan for plan in plans}
    runner = Local()
    groups: dict[str, list[vllm_check.Target]] = {}
    shown: dict[str, str] = {}
    for plan in plans:
        if venv:
            where = f"venv {venv}"
        elif image:
            where = image
        else:
            where = own_image(runner, plan) or ""
            if not where:
                skipped.append(f"{plan.recipe.id}: image {plan.build.tag}"
                               f"{' with its mods' if plan.mods else ''} is not on this machine (--setup builds it)")
                continue
            shown[where] = plan.build.tag + (" + mods" if plan.mods else "")
        groups.setdefault(where, []).extend(vllm_check.targets(plan))
    errors = warnings = 0
    for where, argvs in groups.items():
        argvs = list({(t.recipe, t.argv): t for t in argvs}.values())  # Ray nodes share one argv
        if venv:
            verdict = vllm_check.in_venv(venv, argvs)
        else:
            if image and not docker.image_id(runner, where):
                print(f"cannot check with the vLLM in {where}: no such image on this machine")
                continue
            verdict = vllm_check.in_image(runner, where, argvs)
        if venv or image:
            verdict = advisory(verdict, by_id)
        # the same finding on every node's argv counts (and prints) once
        errors += len({(f.recipe, f.flag, f.message) for f in verdict.errors})
        warnings += len({(f.recipe, f.flag, f.message) for f in verdict.warnings})
        label = shown.get(where, where)
        print(f"{label}: vLLM {verdict.version}, {len(argvs)} argv(s) of "
              f"{len({t.recipe for t in argvs})} recipe(s)")
        for line in dict.fromkeys(verdict.lines(label)):
            print(f"  {line}")
    for line in skipped:
        print(f"not checked: {line}")
    print(f"lint --vllm: {errors} error(s), {warnings} warning(s) in {time.monotonic() - start:.1f} s")
    sys.stdout.flush()
    return 1 if errors else 0

