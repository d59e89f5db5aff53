"""Network interface and InfiniBand HCA names as a run's settings give them (--eth-if/ETH_IF, --ib-if/IB_IF).

Core: config checks the values with these before any node is asked; cluster (roles, preflight) re-uses them.
"""
from __future__ import annotations

import re

from .errors import ConfigError
from .nodes import IFNAME

DEFAULT_MASTER_PORT = 29501
# an HCA as NCCL_IB_HCA takes it: [=^]name[:port]
_HCA = re.compile(r"[=^]?([A-Za-z0-9_.-]{1,63})(?::[0-9]{1,3})?\Z")


def interface_name(text: str, source: str) -> str:
    """Check an --eth-if / ETH_IF value: NCCL, Gloo and UCX are all handed this one exact name."""
    name = text.strip()
    if name and (not IFNAME.match(name) or name in (".", "..")):
        raise ConfigError(f"{source}: '{name}' is not a network interface name (up to 15 letters, digits, "
                          "'.', '-' or '_', e.g. enp1s0f1np1; `ip -br link` lists them)")
    return name


def hca_names(text: str, source: str) -> tuple[str, ...]:
    """Check an --ib-if / IB_IF list (NCCL_IB_HCA syntax: `mlx5_0,mlx5_1:1`, `=` exact, `^` all but these);
    return the HCAs every node must have: none for a `^` list, which only leaves some out."""
    text, names = text.strip(), []
    for item in (t.strip() for t in text.split(",")) if text else ():
        match = _HCA.match(item)
        if not match:
            raise ConfigError(f"{source}: '{item}' in '{text}' is not an HCA name (e.g. mlx5_0 or "
                              "rocep1s0f1:1; `ibdev2netdev` lists them)")
        names.append(match.group(1))
    return () if text.startswith("^") else tuple(names)

