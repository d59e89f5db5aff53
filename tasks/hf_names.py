"""HuggingFace names as data: whether a model option names a local folder or a hub repo id.

Core: the plan, vllm_args and lint read these; hub_cache (the cache on disk) re-exports them.
"""
from __future__ import annotations

import re

REPO_ID_RE = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HUB_NAME_PART = re.compile(r"^[A-Za-z0-9_](?:[\w.-]*[A-Za-z0-9_])?$")


def is_local_path(model: str) -> bool:
    """A model given as a filesystem path is used as is (mounted), never downloaded."""
    return model.startswith(("/", ".", "~"))


def is_repo_id(text: str) -> bool:
    """`org/name` as the hub allows it: letters, digits, '-', '_', '.'; no part starting or ending with '-'
    or '.', no '--' or '..', at most 96 characters a part (the client refuses anything else, with a traceback)."""
    return bool(REPO_ID_RE.match(text)) and all(
        _HUB_NAME_PART.match(part) and "--" not in part and ".." not in part and len(part) <= 96
        for part in text.split("/"))


def is_model_ref(model: str) -> bool:
    """Something a model option can name: a local path, or a repo id the hub allows."""
    return is_local_path(model) or is_repo_id(model)

