"""The settings a .env file can give a run (ETH_IF, IB_IF, MASTER_PORT, NON_PRIVILEGED), merged with their flags.

Read once per run by both entry points (run-recipe and dodo.py), each value checked and named by its
flag or key when it is wrong.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import ConfigError
from .interfaces import DEFAULT_MASTER_PORT, hca_names, interface_name
from .nodes import load_env, port_number
from .plan import Options, env_file


def env_options(config: Path | None, *, eth_if: str | None = None, ib_if: str | None = None,
                master_port: int | None = None, non_privileged: bool = False) -> dict[str, Any]:
    """The Options a .env can set (ETH_IF, IB_IF, MASTER_PORT, NON_PRIVILEGED), each checked; a flag wins.

    Both entry points take them from here, so `doit run recipe=X` renders the same node scripts as
    run-recipe and neither restarts what the other started."""
    path = env_file(Options(config=config))
    dotenv = load_env(path)

    def pick(flag_value: Any, flag: str, key: str) -> tuple[str, str]:
        given = flag_value is not None  # a flag given as 0 or "" still wins (and is checked)
        return (str(flag_value), flag) if given else (dotenv.get(key, ""), f"{path}: {key}")

    port_text, port_source = pick(master_port, "--master-port", "MASTER_PORT")
    port = port_number(port_text or str(DEFAULT_MASTER_PORT))
    if port is None:
        raise ConfigError(f"{port_source}: '{port_text}' is not a port number (1-65535)")
    ib_text, ib_source = pick(ib_if, "--ib-if", "IB_IF")
    hca_names(ib_text, ib_source)
    return {"eth_if": interface_name(*pick(eth_if, "--eth-if", "ETH_IF")), "ib_if": ib_text.strip(),
            "master_port": port,
            "privileged": not (non_privileged or dotenv.get("NON_PRIVILEGED", "").lower() in ("1", "true", "yes"))}
