"""The real LiteLLM proxy as a test image: the Debian rootfs of rayimage + `litellm[proxy]` wheels from PyPI.

Built like the Ray image (no registry, no network inside `docker build`), cached by input hash. The
product's gateway image is a setting (RUNRECIPE_GATEWAY_IMAGE): tests point it at this one.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Sequence

if __package__:
    from . import rayimage
else:  # run as a script: python3 tests/harness/gatewayimage.py
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import rayimage  # type: ignore[no-redef]

DockerNode = rayimage.DockerNode

LITELLM_VERSION = "1.91.5"
# pip download judges markers for Python 3.11.0; bookworm's is 3.11.2, for which redis also wants this
EXTRA = ("async-timeout>=4.0.3",)

DOCKERFILE = """\
FROM {base} AS build
COPY wheels /wheels
RUN python3 -m venv /opt/litellm \\
 && PIP_DISABLE_PIP_VERSION_CHECK=1 /opt/litellm/bin/pip install -q --no-index --no-cache-dir \\
      --find-links /wheels 'litellm[proxy]=={version}'

FROM {base}
COPY --from=build /opt/litellm /opt/litellm
ENV PATH=/opt/litellm/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    VIRTUAL_ENV=/opt/litellm LANG=C.UTF-8 LITELLM_LOCAL_MODEL_COST_MAP=True
RUN litellm --version
CMD ["litellm", "--help"]
"""


def dockerfile() -> str:
    return DOCKERFILE.format(base=rayimage.base_tag(), version=LITELLM_VERSION)


def build_gateway_image(node: DockerNode, log=print) -> str:
    """The LiteLLM image on ``node`` (built once per input hash; ~170 MB of wheels, fetched once)."""
    pyver = rayimage.rootfs_python(rayimage.rootfs_tarball(log))
    wheels = rayimage.download_wheels(f"litellm[proxy]=={LITELLM_VERSION}", f"litellm-{LITELLM_VERSION}", pyver, log, EXTRA)
    return rayimage.build_wheels_image(node, rayimage.wheels_tag("rr-litellm", dockerfile(), wheels), dockerfile(),
                                       wheels, log)


class Daemon:
    """A dockerd reached by DOCKER_HOST (the e2e test daemon) as a rayimage.DockerNode."""

    def __init__(self, docker_host: str) -> None:
        self.name, self.host = docker_host, docker_host

    def _env(self, extra: dict | None) -> dict:
        import os

        return {**os.environ, "DOCKER_HOST": self.host, **(extra or {})}

    def run(self, cmd: Sequence[str], *, env: dict | None = None, timeout: float = 120,
            **kw) -> subprocess.CompletedProcess:
        return subprocess.run(list(cmd), env=self._env(env), capture_output=True, text=True, timeout=timeout)

    def docker(self, *args: str, env: dict | None = None, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
        return self.run(["docker", *args], env=env, timeout=timeout)

    def popen(self, cmd: Sequence[str], **kw) -> subprocess.Popen:
        return subprocess.Popen(list(cmd), env=self._env(None), **kw)


def ensure_gateway_image(nodes: Sequence[DockerNode], log=print) -> str:
    """Build on the first node, copy to the rest."""
    tag = build_gateway_image(nodes[0], log)
    for node in nodes[1:]:
        rayimage.copy_image(nodes[0], node, tag)
    return tag


if __name__ == "__main__":  # build it on the test dockerd: python3 tests/harness/gatewayimage.py
    import engine

    print(build_gateway_image(Daemon(engine.docker_host())))
