"""--apply-vllm-pr: a vLLM pull request's diff as one more mod layer (origin-facts 2.7, 6.3).

The origin downloads the diff on every launch and patches the running container. Here the diff is
fetched once into the project's cache, keyed by PR number and sha256 (`.runrecipe/cache/vllm-pr/
<N>/<sha256>/`), and that folder is an ordinary mod (pr.diff + a generated run.sh), so the mods
image is content-hashed like any other: the same diff means the same image and nothing runs.

The origin's runtime-only rule holds: a patch may change files of the installed `vllm` package only
(not native sources, build files or setup.py, which need a rebuild); docs, tests, benchmarks,
examples and CI files are ignored. The fetch uses huggingface_hub's HTTP client (retries, proxies,
and HF_HUB_OFFLINE, which makes the cache the only source); RUNRECIPE_VLLM_PR_BASE points it elsewhere.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from typing import Any

from ..errors import ConfigError, RunError
from ..facts.hub_cache import offline_from_env
from ..mod_spec import BASE_ENV, FLAG, Mod, PullRequest, write_run_sh, cached, check_runtime_only


def fetch(pr: PullRequest) -> Mod:
    """The PR's mod: from the cache, else downloaded once (never when HF_HUB_OFFLINE is set)."""
    found = cached(pr)
    if found:
        return found
    if offline_from_env():
        raise ConfigError(f"{FLAG} {pr.number}: the patch is not in the cache ({pr.folder}) and HF_HUB_OFFLINE "
                          "forbids fetching it; run once with network access, then offline runs use the cache")
    data = _download(pr)
    digest = hashlib.sha256(data).hexdigest()
    check_runtime_only(pr, data.decode("utf-8", "replace"))
    folder = pr.folder / digest
    tmp = pr.folder / f".{digest}.part"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp / "pr.diff").write_bytes(data)
    try:
        os.replace(tmp, folder)
    except OSError:  # another run cached the same diff first
        shutil.rmtree(tmp, ignore_errors=True)
        if not (folder / "pr.diff").is_file():
            raise
    write_run_sh(pr, folder, digest)
    return Mod(f"vllm-pr-{pr.number}", folder)


def fetch_missing(apply: list[tuple[str, Any]]) -> list[str]:
    """Fetch every --apply-vllm-pr of the run the cache lacks (before the plan reads the cache); say what."""
    notes = []
    for kind, pr in apply:
        if kind == "pr" and cached(pr) is None:
            notes.append(f"{FLAG} {pr.number}: fetched {pr.url} into {fetch(pr).path} (its name is its sha256)")
    return notes


def _download(pr: PullRequest) -> bytes:
    from huggingface_hub.utils import http_backoff

    try:
        resp = http_backoff("GET", pr.url, max_retries=3, timeout=60)
    except Exception as exc:  # httpx2's transport errors and the hub's OfflineModeIsEnabled alike
        raise RunError(f"{FLAG} {pr.number}: cannot fetch {pr.url}: {exc}\n  set {BASE_ENV} to another "
                       f"server, or fetch it once where there is network (the cache is {pr.folder})") from None
    if resp.status_code != 200:
        raise RunError(f"{FLAG} {pr.number}: {pr.url} answered HTTP {resp.status_code}: is {pr.number} a "
                       "vLLM pull request?")
    return resp.content



