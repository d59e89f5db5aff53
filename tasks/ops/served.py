"""What a server container is made of, shared by the launch and the vLLM check: the image it runs (the
recipe's, or its mods-derived one), and the HF folders mounted into it.

They live below both so that the check (which the launch consults) never imports the launch.
"""
from __future__ import annotations

from .. import settings
from ..errors import RunError
from ..facts import docker, hub_cache
from ..connect import Connector
from ..plan import Plan
from . import mods

CONTAINER_HF_HOME = "/root/.cache/huggingface"


def image_ref(runner: Connector, plan: Plan) -> str:
    """The image ID the server runs: the recipe's image, or its mods-derived image."""
    tag = plan.build.tag
    base = docker.image_id(runner, tag)
    if not base:
        raise RunError(f"image '{tag}' is not on {runner.node}.\n"
                       f"Build it first: ./run-recipe.sh {plan.recipe.id} --setup "
                       f"(or doit run recipe={plan.recipe.id})")
    if not plan.mods:
        return base
    derived = docker.image_id(runner, mods.derived_tag(base, plan.mods))
    if not derived:
        raise RunError(f"the mods of {plan.recipe.id} are not applied to {tag} on {runner.node}; "
                       f"run the mods task: doit run recipe={plan.recipe.id}")
    return derived


def hf_mounts(plan: Plan) -> list[str]:
    """The HF folder (and a hub cache kept elsewhere), and local model folders read-only at their path."""
    mounts = [f"{settings.hf_home()}:{CONTAINER_HF_HOME}"]
    hub = hub_cache.hub_cache_dir()
    if hub != settings.hf_home() / "hub":
        mounts.append(f"{hub}:{CONTAINER_HF_HOME}/hub")
    return mounts + [f"{path}:{path}:ro" for path in plan.local_mounts]

