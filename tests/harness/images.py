"""Build the stand-in vLLM test image (busybox FROM scratch; no registry needed).

The build dir doubles as a product "Docker folder": the product runs
`docker build -f <dir>/<Dockerfile> <dir> --build-arg ...` on it, and the image
records which Dockerfile and PRE_TRANSFORMERS it was built with in /build-info.
"""
from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path

from . import engine

STANDIN_SRC = Path(__file__).resolve().parents[1] / "images" / "standin"
DOCKERFILES = ("Dockerfile", "Dockerfile.mxfp4", "Dockerfile.wheels")
BUSYBOX = Path("/bin/busybox")  # Debian busybox-static; a build context cannot reach it


def standin_docker_dir(dest: Path) -> Path:
    """Lay out a complete build dir at dest (created if needed) and return it.

    Renders the three Dockerfiles from one template so they cannot drift apart,
    and copies in vllm, the bash wrapper and the host's static busybox.
    """
    if not BUSYBOX.is_file():
        raise FileNotFoundError(f"{BUSYBOX} missing: apt-get install busybox-static")
    dest.mkdir(parents=True, exist_ok=True)
    template = (STANDIN_SRC / "Dockerfile.template").read_text()
    for name in DOCKERFILES:
        (dest / name).write_text(template.replace("@DOCKERFILE@", name))
    for name in ("vllm", "bash"):
        shutil.copyfile(STANDIN_SRC / name, dest / name)
        (dest / name).chmod(0o755)
    shutil.copyfile(BUSYBOX, dest / "busybox")
    (dest / "busybox").chmod(0o755)
    return dest


def cluster_standin_dir(dest: Path, base_image: str, label: str = "") -> Path:
    """A product-style Docker folder whose Dockerfile adds the stand-in vllm (and busybox, whose nc serves) to
    `base_image` (the Ray test image), for cluster runs where Ray must be real."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(BUSYBOX, dest / "busybox")
    shutil.copy(STANDIN_SRC / "vllm", dest / "vllm")
    (dest / "Dockerfile").write_text(
        f"FROM {base_image}\nCOPY busybox /usr/local/bin/busybox\n"
        "COPY vllm /usr/local/bin/vllm\n"
        "RUN chmod +x /usr/local/bin/vllm /usr/local/bin/busybox\nWORKDIR /workspace/vllm\n"
        + (f"LABEL {label}\n" if label else ""))
    return dest


def context_hash(build_dir: Path) -> str:
    """Short sha256 over every file name and content in build_dir (the image cache key)."""
    h = hashlib.sha256()
    for path in sorted(p for p in build_dir.rglob("*") if p.is_file()):
        h.update(path.relative_to(build_dir).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def ensure_standin_image(tag: str, docker_host: str) -> str:
    """Build the stand-in from `Dockerfile` once per content and return its image ID.

    `tag` is the repository part (e.g. "rr-standin"); the tag actually used is
    "<tag>:<context hash>", so a changed context builds anew and an unchanged
    one is reused from the daemon's persistent data-root.
    """
    with tempfile.TemporaryDirectory(prefix="rr-standin-") as tmp:
        build_dir = standin_docker_dir(Path(tmp))
        full_tag = f"{tag}:{context_hash(build_dir)}"
        found = engine.run_docker(docker_host, "image", "inspect", "--format", "{{.Id}}",
                                  full_tag, check=False)
        if found.returncode == 0:
            return found.stdout.strip()
        engine.run_docker(docker_host, "build", "-q", "-t", full_tag,
                          "-f", str(build_dir / "Dockerfile"), str(build_dir), timeout=300)
    return engine.run_docker(docker_host, "image", "inspect", "--format", "{{.Id}}",
                             full_tag).stdout.strip()
