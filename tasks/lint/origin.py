"""Lint rules for what a recipe written for the origin says but means nothing here (issue #14).

Kept apart from lint.py's engine so each rule reads as one idea; both read data only: the Recipe's
fields and the parsed command (vllm_args.Command), never its text.

    executor        --distributed-executor-backend with a value no run uses: solo runs and native
                    clusters (the default) remove the flag, --ray sets it to ray (origin-facts 6.1)
    recipe-version  a recipe_version this tool does not know
"""
from __future__ import annotations

from dataclasses import dataclass

from ..recipe import RECIPE_VERSIONS, Recipe
from ..vllm_args import EXECUTOR, Command


@dataclass(frozen=True)
class Note:
    """A warning for lint to place: on `flag`'s line in the command, else on the recipe field `field`."""

    rule: str
    message: str
    fix: str
    field: str = ""
    flag: str = ""


def check(recipe: Recipe, command: Command) -> list[Note]:
    return [n for n in (executor(recipe, command), version(recipe)) if n]


def executor(recipe: Recipe, command: Command) -> Note | None:
    value = command.option(EXECUTOR)
    if value is None or (value == "ray" and not recipe.solo_only):
        return None  # `ray` is what --ray uses: it says how the recipe was meant to run
    if recipe.solo_only:
        return Note("executor", f"solo_only, but the command sets {EXECUTOR} {value}: a solo run removes it "
                    "whatever its value, so it does nothing", f"remove {EXECUTOR}", flag=EXECUTOR)
    return Note("executor", f"{EXECUTOR} {value} is never used: solo runs and native cluster runs (the "
                "default) remove the flag, and --ray sets it to ray",
                "remove it (run with --ray to spread vLLM with Ray)", flag=EXECUTOR)


def version(recipe: Recipe) -> Note | None:
    if recipe.recipe_version in RECIPE_VERSIONS:
        return None
    return Note("recipe-version", f"recipe_version '{recipe.recipe_version}' is not one this tool knows "
                f"(it reads version {', '.join(RECIPE_VERSIONS)}); the recipe is read as that version",
                f"check the fields against the recipe format, then set recipe_version: \"{RECIPE_VERSIONS[-1]}\"",
                field="recipe_version")

