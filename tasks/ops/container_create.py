"""Creating the server container on a node: one command that prepares the node and runs `docker create`.

In that one command (one SSH round trip on a worker, as `docker create` alone was):
- the compile caches (container_flags.COMPILE_CACHES) are created under the node user's $HOME and
  mounted, so a relaunch reuses torch.compile / FlashInfer / Triton / TileLang artefacts;
- the secret -e variables arrive on stdin and are written to a mode-0600 env file (umask 077, mktemp)
  that `docker create --env-file` reads and that is removed when the command ends, whatever happens.
  Their values are never in an argv, the launch script or a printed line.

The script is a constant; every value reaches it as its own argv word, quoted by the connector.
"""
from __future__ import annotations

from typing import Sequence

CREATE_SCRIPT = r"""set -e
umask 077
caches=$1; shift
mounts=()
for ((i = 0; i < caches; i++)); do
  mkdir -p -- "$HOME/$1"
  mounts+=(-v "$HOME/$1:$2")
  shift 2
done
env_file=$(mktemp)
trap 'rm -f -- "$env_file"' EXIT
cat > "$env_file"
docker create --env-file "$env_file" "${mounts[@]}" "$@"
"""


def create_argv(caches: Sequence[tuple[str, str]], docker_args: Sequence[str]) -> list[str]:
    """The node command: `caches` are (folder under $HOME, path in the container); `docker_args` all of
    `docker create`'s arguments after the env file and the cache mounts (options, image, command).
    Feed it the env file's text on stdin; it prints the container ID."""
    return ["bash", "-c", CREATE_SCRIPT, "runrecipe-create", str(len(caches)),
            *(word for pair in caches for word in pair), *docker_args]

