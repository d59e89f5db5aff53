"""Runs INSIDE a stack's gateway (the LiteLLM proxy): every request's key against the stack's key.

LiteLLM without a database answers a missing key with a bare 500 and a wrong one with 400 "No connected
db."; a client must read 401 and which of the two it was. The configuration runrecipe renders names this
file as `general_settings.custom_auth` (LiteLLM loads it from the folder of its configuration), and its
`master_key` as the key, read from the variable `api_key_env` names. Standalone: no runrecipe import.
"""
import hmac

from fastapi import HTTPException, Request
from litellm.proxy._types import LitellmUserRoles, UserAPIKeyAuth


async def check(request: Request, api_key: str) -> UserAPIKeyAuth:
    """Let the request through when its key is the stack's (compared in constant time); else 401."""
    from litellm.proxy import proxy_server

    wanted = proxy_server.master_key
    if not isinstance(wanted, str) or not wanted:
        raise HTTPException(status_code=401, detail="the gateway has no key configured, so it lets no one in")
    if not api_key:
        raise HTTPException(status_code=401, detail="no API key: send the stack's key as `Authorization: Bearer KEY`")
    if not hmac.compare_digest(api_key.encode(), wanted.encode()):
        raise HTTPException(status_code=401, detail="wrong API key: this is not the stack's key")
    return UserAPIKeyAuth(api_key="runrecipe-stack-key", user_role=LitellmUserRoles.PROXY_ADMIN)
