"""The keys that keep a stack's entries behind its gateway, which is the stack's one door.

An entry served from the head listens on loopback only, where the gateway (on the head) reaches it.
An entry on another node must listen on that node's network, so it wants a key of its own, which the
gateway's route to it presents. That key is derived from the gateway's (an HMAC over the stack and the
entry's container name): the same on every run, so a re-run restarts nothing; new when the gateway's
key changes; stored nowhere. It reaches the entry as VLLM_API_KEY through the secret env file and the
gateway as a variable its configuration names, never on a command line. A gateway without a key
answers anyone, and so, then, do the entries on other nodes: there is nothing to keep them behind.
"""
from __future__ import annotations

import hashlib
import hmac
import os
from typing import Mapping

from .. import masking

LOOPBACK = "127.0.0.1"
ENTRY_KEY_VAR = "VLLM_API_KEY"     # what vLLM reads when its command has no --api-key


def gateway_key(key_env: str, dotenv: Mapping[str, str]) -> str:
    """The gateway's key: the variable `api_key_env` names, from the environment, else from the run's .env
    values (read once, config.py); "" unset."""
    if not key_env:
        return ""
    return os.environ.get(key_env) or dotenv.get(key_env, "")


def entry_key(gateway_secret: str, stack: str, entry: str) -> str:
    """The key of an entry on another node, from the gateway's key; registered as a secret (never shown)."""
    digest = hmac.new(gateway_secret.encode(), f"runrecipe entry key\0{stack}\0{entry}".encode(), hashlib.sha256)
    key = "sk-rr-" + digest.hexdigest()
    masking.remember_secret(key)
    return key


def route_key_var(index: int) -> str:
    """The variable that hands the gateway the key of its route number `index`."""
    return f"RUNRECIPE_ROUTE_KEY_{index}"

