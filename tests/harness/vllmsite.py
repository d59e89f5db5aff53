"""The real vLLM for the check step's tests: its parser and validation, on CPU, in a real container.

A full `pip install vllm` is ~9.4 GB (CUDA libraries). Parsing needs far less: vLLM with `--no-deps`,
the CPU torch wheel this machine kind keeps on disk (`torch==2.13.0` takes it; vLLM 0.33.0 asks for
2.14.0, which only matters for kernels) and the packages its import chain asks for, pinned below
(found by importing until nothing was missing). They are installed with `pip install --target` into a
site folder cached under /var/lib/runrecipe-test/cache (~2.2 GB, built once per machine), then copied
into an image on top of the Debian base image (python 3.11, as the wheels) with `docker run` +
`docker commit`, so no build context of gigabytes travels to the daemon. The image has python3 with
vLLM importable (PYTHONPATH) and the stand-in `vllm` command (so a run can also launch): a real
vLLM check, no GPU.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

from . import rayimage
from .rayimage import CACHE, _check, _h

VLLM = "vllm==0.33.0"
PACKAGES = """
aiohappyeyeballs==2.7.1 aiohttp==3.14.5 aiosignal==1.4.0 annotated_doc==0.0.7 annotated_types==0.8.0 anthropic==2.14.0
anyio==4.16.0 apache_tvm_ffi==0.1.11 astor==0.8.1 attrs==26.1.0 blake3==1.0.11 cachetools==8.0.2 cbor2==6.3.0
certifi==2026.10.19.post1 charset_normalizer==3.5.3 click==8.5.1 cloudpickle==3.1.3 compressed_tensors==0.17.0
depyf==0.20.0 dill==0.4.1 diskcache==5.6.3 distro==1.9.0 docstring_parser==0.18.0 einops==0.8.2 fastapi==0.136.3
filelock==4.3.1 frozenlist==1.8.0 fsspec==2026.9.0 gguf==0.19.0 h11==0.16.0 hf_xet==1.8.0 httpcore2==2.16.2
httpx2==2.16.2 huggingface_hub==2.4.0 idna==3.20 ijson==3.6.0 importlib_metadata==10.2.0 jinja2==3.1.6 jiter==0.19.0
jsonschema==4.26.0 jsonschema_specifications==2025.9.1 lark==1.2.2 llguidance==1.9.1 lm_format_enforcer==0.11.3
markdown_it_py==4.3.0 markupsafe==3.0.4 mdurl==0.1.2 mistral_common==1.13.1 model_hosting_container_standards==0.1.16
mpmath==1.4.1 msgspec==0.23.0 multidict==7.2.1 networkx==3.6.1 numpy==2.4.6 openai==3.57.0 opentelemetry_api==1.45.2
opentelemetry_sdk==1.45.2 opentelemetry_semantic_conventions==0.66b2 opentelemetry_semantic_conventions_ai==0.5.1
orjson==3.13.0 oss_harmony==0.0.11 outlines_core==0.2.14 packaging==26.4 partial_json_parser==0.2.1.1.post7
pillow==13.0.0 prometheus_client==0.26.0 prometheus_fastapi_instrumentator==8.1.0 propcache==0.5.4 psutil==7.2.2
py_cpuinfo==9.0.0 pybase64==1.5.1 pydantic==2.14.4 pydantic_core==2.50.5 pydantic_settings==2.16.3 pygments==2.21.0
python_json_logger==4.2.0 python_multipart==0.0.34 pyyaml==6.0.4 pyzmq==27.3.0 referencing==0.37.0 regex==2026.11.19
requests==2.34.2 rich==15.0.0 rpds_py==2026.9.1 safetensors==0.8.0 sentencepiece==0.2.3 setproctitle==1.3.8
setuptools==84.2.1 shellingham==1.5.4 sniffio==1.3.1 sse_starlette==3.7.0 starlette==1.10.0 sympy==1.14.0
tiktoken==0.14.0 tokenizers==0.23.3 torch==2.13.0 tqdm==4.70.1 transformers==5.20.2 truststore==0.10.5 typer==0.29.2
typing_extensions==4.16.0 typing_inspection==0.4.5 urllib3==2.8.0 uvicorn==0.54.0 uvloop==0.23.0 watchfiles==1.3.0
xgrammar==0.2.8 yarl==1.25.1 zipp==4.1.2
""".split()
SITE_IN_IMAGE = "/opt/vllm-site"
Docker = Callable[..., subprocess.CompletedProcess]  # docker(*args, timeout=...) on one daemon


def site_key() -> str:
    return _h(VLLM, *PACKAGES, rayimage.wheel_platform())


def site_dir(log: Callable[[str], None] = print) -> Path:
    """vLLM and its import chain, `pip install --target`ed once per machine (~2-3 min cold, ~2.2 GB)."""
    path = CACHE / f"vllm-site-{site_key()}"
    if (path / ".complete").exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="vllm-site-", dir=CACHE))
    try:
        log(f"pip install --no-deps --target {VLLM} and {len(PACKAGES)} packages ...")
        t0 = time.monotonic()
        _check(subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--only-binary=:all:",
                               "--disable-pip-version-check", "-q", "--target", str(tmp), VLLM, *PACKAGES],
                              capture_output=True, text=True, timeout=1800), "pip install vllm site")
        (tmp / ".complete").write_text(f"{time.monotonic() - t0:.0f} s\n")
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
        log(f"vLLM site ready in {time.monotonic() - t0:.0f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def image_tag(base: str) -> str:
    standin = (Path(__file__).resolve().parents[1] / "images" / "standin" / "vllm").read_bytes()
    return f"rr-vllm-check:{_h(base, site_key(), standin)}"


def has(docker: Docker, tag: str) -> bool:
    return docker("image", "inspect", "--format", "{{.Id}}", tag, timeout=30).returncode == 0


def ensure_image(docker: Docker, base: str, log: Callable[[str], None] = print) -> str:
    """`base` (an image with python3 3.11) plus the vLLM site, as an image on that daemon; cached by tag."""
    tag = image_tag(base)
    if has(docker, tag):
        return tag
    site = site_dir(log)
    name = f"rr-vllm-site-{site_key()}"
    docker("rm", "-f", name, timeout=60)
    t0 = time.monotonic()
    # the site, and the stand-in `vllm` command with busybox httpd (as images.cluster_standin_dir adds them)
    standin = Path(__file__).resolve().parents[1] / "images" / "standin" / "vllm"
    copy = (f"cp -a /src/. {SITE_IN_IMAGE} && cp /standin /usr/local/bin/vllm && cp /busybox /usr/local/bin/busybox"
            " && ln -sf busybox /usr/local/bin/httpd && chmod +x /usr/local/bin/vllm /usr/local/bin/busybox")
    _check(docker("run", "--name", name, "--network", "none", "-v", f"{site}:/src:ro", "-v", f"{standin}:/standin:ro",
                  "-v", f"{rayimage.BUSYBOX}:/busybox:ro", "--entrypoint", "sh", base, "-c", copy, timeout=900),
           "copy the vLLM site into the image")
    try:
        _check(docker("commit", "--change", f"ENV PYTHONPATH={SITE_IN_IMAGE}", "--change", "ENTRYPOINT []",
                      "--change", 'CMD ["bash"]', name, tag, timeout=900), f"docker commit {tag}")
    finally:
        docker("rm", "-f", name, timeout=60)
    log(f"{tag} ready in {time.monotonic() - t0:.0f} s")
    return tag


def node_docker(node: "rayimage.DockerNode") -> Docker:
    """A netns test node's daemon as a Docker callable."""
    return lambda *args, timeout=60: node.docker(*args, timeout=timeout)


def local_docker(docker_host: str) -> Docker:
    """The test dockerd at `docker_host` as a Docker callable."""
    def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return subprocess.run(["docker", "-H", docker_host, *args], capture_output=True, text=True, timeout=timeout)
    return run
