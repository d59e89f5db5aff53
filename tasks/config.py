"""The settings a run reads from outside its recipe, read once: the .env file (CLUSTER_NODES, COPY_HOSTS, ETH_IF,
IB_IF, MASTER_PORT, NON_PRIVILEGED) merged with the flags that override it.

Both entry points (run-recipe and dodo.py) read a `Settings` here once per run and hand it down in the
Options, so the plan takes its nodes and copy addresses from it instead of opening the .env again; each
value is checked and named by its flag or key when it is wrong. Commands that only look at what runs
(status, stop, logs, bench, --show-env) read it with `read_env`, which checks none of the launch's
values: a bad IB_IF must not keep anyone from stopping a server. Every .env read of the tool is here.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from . import settings
from .errors import ConfigError
from .interfaces import DEFAULT_MASTER_PORT, hca_names, interface_name
from .nodes import Node, load_env, parse_list, port_number

TRUE_WORDS = ("1", "true", "yes")


@dataclass(frozen=True)
class Settings:
    """One run's .env (its path and values) and the values it gives, each already merged with its flag."""

    env_path: Path
    values: Mapping[str, str]
    eth_if: str = ""
    ib_if: str = ""
    master_port: int = DEFAULT_MASTER_PORT
    privileged: bool = True
    checked: bool = True       # False: read by `read_env`, the launch's values (ETH_IF, ...) left unread

    def cluster_nodes(self) -> tuple[Node, ...]:
        """The .env's CLUSTER_NODES, head first (empty when unset), each node checked and named by its key."""
        return parse_list(self.values.get("CLUSTER_NODES", ""), f"{self.env_path}: CLUSTER_NODES")

    def option_fields(self) -> dict[str, Any]:
        """The Options fields these settings give (a flag already won over its .env key)."""
        if not self.checked:
            raise ValueError(f"{self.env_path}: read without its launch settings (read_env); a run wants read_settings")
        return {"eth_if": self.eth_if, "ib_if": self.ib_if, "master_port": self.master_port,
                "privileged": self.privileged}

    def options(self) -> dict[str, Any]:
        """The Options fields of a run made with these settings, the settings themselves among them."""
        return {**self.option_fields(), "settings": self}


def env_file(config: Path | None) -> Path:
    """The .env to read: --config FILE, which must exist (a typo would silently mean solo mode), else
    the project's .env, which may be absent."""
    if config is not None and not config.is_file():
        raise ConfigError(f"--config {config}: no such file (`--discover --config {config}` writes one)")
    return config or settings.project_root() / ".env"


def read_env(config: Path | None) -> Settings:
    """The .env alone, none of its launch values checked: what status, stop, logs and bench look at (the
    nodes, a gateway's key), so a value only a launch uses cannot keep them from working."""
    path = env_file(config)
    return Settings(env_path=path, values=MappingProxyType(load_env(path)), checked=False)


def read_settings(config: Path | None, *, eth_if: str | None = None, ib_if: str | None = None,
                  master_port: int | None = None, non_privileged: bool = False) -> Settings:
    """The run's Settings: the .env read once, each value checked; a flag (given, even as 0 or "") wins."""
    env = read_env(config)
    path, dotenv = env.env_path, env.values

    def pick(flag_value: Any, flag: str, key: str) -> tuple[str, str]:
        given = flag_value is not None  # a flag given as 0 or "" still wins (and is checked)
        return (str(flag_value), flag) if given else (dotenv.get(key, ""), f"{path}: {key}")

    port_text, port_source = pick(master_port, "--master-port", "MASTER_PORT")
    port = port_number(port_text or str(DEFAULT_MASTER_PORT))
    if port is None:
        raise ConfigError(f"{port_source}: '{port_text}' is not a port number (1-65535)")
    ib_text, ib_source = pick(ib_if, "--ib-if", "IB_IF")
    hca_names(ib_text, ib_source)
    return Settings(env_path=path, values=dotenv,
                    eth_if=interface_name(*pick(eth_if, "--eth-if", "ETH_IF")), ib_if=ib_text.strip(),
                    master_port=port,
                    privileged=not (non_privileged or dotenv.get("NON_PRIVILEGED", "").lower() in TRUE_WORDS))


def env_options(config: Path | None, *, eth_if: str | None = None, ib_if: str | None = None,
                master_port: int | None = None, non_privileged: bool = False) -> dict[str, Any]:
    """The Options a .env can set (ETH_IF, IB_IF, MASTER_PORT, NON_PRIVILEGED), each checked; a flag wins."""
    return read_settings(config, eth_if=eth_if, ib_if=ib_if, master_port=master_port,
                         non_privileged=non_privileged).option_fields()

