"""Where a run's mods come from, in the order they are applied.

1. The recipe's `mods:` entries, each looked up first in the recipe's own tree (the folder that holds
   the recipe's `recipes/` root: an origin checkout keeps `mods/` beside `recipes/`), then in the
   project folder, then in this checkout. A missing mod's error lists every place it looked.
2. `--apply-mod PATH` (relative to the current directory) and `--apply-vllm-pr N|URL`, in the order
   they were given on the command line (origin-facts 6.2, 6.3).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from . import mod_spec, settings
from .errors import RecipeError
from .mod_spec import Mod
from .recipe import Recipe

APPLY_MOD = "--apply-mod"


def recipe_tree(recipe_path: Path) -> Path | None:
    """The folder holding the `recipes/` folder the recipe sits in (at any depth), if it sits in one."""
    for parent in recipe_path.resolve().parents:
        if parent.name == "recipes":
            return parent.parent
    return None


def search_roots(recipe_path: Path) -> tuple[Path, ...]:
    roots = (recipe_tree(recipe_path), settings.project_root(), settings.CODE_ROOT)
    return tuple(dict.fromkeys(r.resolve() for r in roots if r is not None))


def find(entry: str, roots: tuple[Path, ...]) -> tuple[Path | None, tuple[Path, ...]]:
    """The first root holding `entry`, and every candidate tried (for the error)."""
    tried: list[Path] = []
    for root in roots:
        candidate = root / entry  # relative to the tree, as in the origin (an absolute entry stays itself)
        if candidate in tried:
            continue
        tried.append(candidate)
        try:
            if candidate.exists():
                return candidate.resolve(), tuple(tried)
        except OSError:  # e.g. a name too long for the file system: not there
            continue
    return None, tuple(tried)


def problem(entry: str, roots: tuple[Path, ...]) -> str | None:
    """What is wrong with one `mods:` entry (for lint), or None when it is a usable mod."""
    path, tried = find(entry, roots)
    if path is None:
        return f"not found in {', '.join(str(p) for p in tried)}"
    try:
        mod_spec.check((path,), "mods")
    except RecipeError as exc:
        return f"'{path}' {exc.reason}"
    return None


def not_found(recipe: Recipe, index: int, entry: str, tried: tuple[Path, ...]) -> RecipeError:
    fix = (f"put the mod (a folder or .zip with run.sh) at {tried[0]}, or fix the path (relative to the "
           "folder that holds recipes/)")
    places = "".join(f"\n  {p}" for p in tried)
    return RecipeError(f"{recipe.path}: mods[{index}]: '{entry}' not found; looked in:{places}\n{fix}",
                       file=str(recipe.path), field=("mods", index), fix=fix,
                       reason=f"'{entry}' not found in {', '.join(str(p) for p in tried)}")


def recipe_mods(recipe: Recipe) -> tuple[Mod, ...]:
    roots = search_roots(recipe.path)
    paths = []
    for i, entry in enumerate(recipe.mods):
        path, tried = find(entry, roots)
        if path is None:
            raise not_found(recipe, i, entry, tried)
        paths.append(path)
    return mod_spec.check(tuple(paths), f"{recipe.path}")


def plan_mods(recipe: Recipe, apply: tuple[tuple[str, object], ...]) -> tuple[tuple[Mod, ...], list[str]]:
    """Every mod of the run, in order, and warnings for PRs not fetched yet (a dry run fetches nothing)."""
    found = list(recipe_mods(recipe))
    warnings = []
    for kind, value in apply:
        if kind == "mod":
            found += mod_spec.check((Path(str(value)),), APPLY_MOD, field="")
        else:
            assert isinstance(value, mod_spec.PullRequest)
            mod = mod_spec.cached(value)
            if mod is None:
                warnings.append(f"{mod_spec.FLAG} {value.number} is not fetched yet: a run fetches {value.url} "
                                "once, then applies it as a mod")
            else:
                found.append(mod)
    return unique_names(found), warnings


def unique_names(found: list[Mod]) -> tuple[Mod, ...]:
    """Each mod gets its own folder in the image: a second `fix-a` becomes `fix-a-2`."""
    taken: set[str] = set()
    out = []
    for mod in found:
        name, n = mod.name, 1
        while name in taken:
            n += 1
            name = f"{mod.name}-{n}"
        taken.add(name)
        out.append(dataclasses.replace(mod, name=name))
    return tuple(out)

