"""Which values are secrets, and how text loses them before a person sees it.

A secret is HF_TOKEN (and the client's other token variables), and the value of any environment variable
or .env key whose name says token, key, secret, pass(word) or credential. Values are masked wherever they
appear, not only under their own name: `CLUSTER_NODES=a,hf_...` must not show the token in its error.
.env files register their secret values as they are read (nodes.load_env), so an error raised later in the
run is scrubbed of them too. Library modules raise; the CLI, dodo.py and the task actions call `scrub`
on every message they print, which also takes out what would steer a terminal (`printable`): container
logs and a node's output are text someone else wrote.
"""
from __future__ import annotations

import os
import re
from typing import Iterable, Mapping

SECRET_WORDS = ("TOKEN", "KEY", "SECRET", "PASS", "CREDENTIAL")  # PASS: PASSWORD, PASSWD, MY_PASS, ...
TOKEN_VARS = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
MASK = "****"
MIN_LEN = 4  # shorter values are masked under their own name only: replacing "pw" everywhere mangles text

_from_files: set[str] = set()
# escape sequences whole (CSI, OSC up to its terminator, two-character ones), then any other C0/C1 control
# but newline and tab, and the bidirectional overrides that reorder what a reader sees
_TERMINAL = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]?|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[ -~]?|\x9b[0-?]*[ -/]*[@-~]?"
                       r"|[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def is_secret_key(key: str) -> bool:
    return any(word in key.upper() for word in SECRET_WORDS)


def remember(values: Mapping[str, str]) -> None:
    """Record the secret values of a .env file, so every later message is scrubbed of them."""
    _from_files.update(v for k, v in values.items() if is_secret_key(k) and v)


def remember_secret(value: str) -> None:
    """A value known to be secret although its variable's name does not say so (a gateway key)."""
    if value:
        _from_files.add(value)


def values(extra: Iterable[str] = ()) -> list[str]:
    """Every secret value known to this run, longest first (a secret containing another is masked whole)."""
    found = {os.environ[k] for k in TOKEN_VARS if os.environ.get(k)}
    found |= {v for k, v in os.environ.items() if is_secret_key(k) and v}
    found |= _from_files | {e for e in extra if e}
    return sorted((v for v in found if len(v) >= MIN_LEN), key=len, reverse=True)


def printable(text: str) -> str:
    """Text that cannot steer a terminal: escape sequences and control characters removed, lines kept
    (`\r\n` ends a line; a lone `\r` would let a line overwrite the one before it)."""
    return _TERMINAL.sub("", text.replace("\r\n", "\n"))


def scrub(text: str, extra: Iterable[str] = ()) -> str:
    """What a person may see: secrets masked, terminal controls removed."""
    for secret in values(extra):
        text = text.replace(secret, MASK)
    return printable(text)


def mask(key: str, value: str) -> str:
    """A .env value as --show-env prints it: masked under a secret name, secrets scrubbed out of the rest."""
    if value and (is_secret_key(key) or value in _from_files):
        return MASK
    return scrub(value)

