"""Test images built without a registry: a tiny busybox image and a Debian + Ray image.

There is no Docker Hub here, so images come from what the machine can reach:
Debian's mirror (debootstrap a minbase rootfs, `docker import` it) and PyPI
(`pip download` Ray wheels on the host; the image installs them with
`--no-index`, because the registries are reached through a TLS proxy whose CA
the image lacks).  Everything is cached by content under
/var/lib/runrecipe-test/cache and tagged with a hash of its inputs, so a test
run builds each image at most once and nodes with a persistent docker
data-root keep it between runs.

Images are built on a node's own dockerd (``node.docker``) and copied to other
nodes with ``docker save | docker load``.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Protocol, Sequence

CACHE = Path(os.environ.get("RR_TEST_BASE", "/var/lib/runrecipe-test")) / "cache"
SUITE = "bookworm"
VARIANT = "minbase"
INCLUDE = "python3,python3-venv,ca-certificates"
RAY_VERSION = "2.60.0"
FALLBACK_MIRROR = "http://deb.debian.org/debian"
BUSYBOX = Path("/bin/busybox")  # Debian's busybox-static: one static binary, no libc needed


class DockerNode(Protocol):
    """What the builders need from a node (tests/harness/cluster.Node satisfies it)."""

    name: str

    def run(self, cmd: Sequence[str], **kw) -> subprocess.CompletedProcess: ...
    def docker(self, *args: str, **kw) -> subprocess.CompletedProcess: ...
    def popen(self, cmd: Sequence[str], **kw) -> subprocess.Popen: ...


class ImageError(RuntimeError):
    """An image could not be built or copied; the message carries the failing command's output."""


def _h(*parts: str | bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()[:16]


def _check(proc: subprocess.CompletedProcess, what: str) -> subprocess.CompletedProcess:
    if proc.returncode != 0:
        err = proc.stderr if isinstance(proc.stderr, str) else (proc.stderr or b"").decode(errors="replace")
        out = proc.stdout if isinstance(proc.stdout, str) else (proc.stdout or b"").decode(errors="replace")
        raise ImageError(f"{what} failed rc={proc.returncode}\n{out[-1500:]}\n{err[-2500:]}")
    return proc


def has_image(node: DockerNode, tag: str) -> str | None:
    """The image ID of ``tag`` on the node, or None."""
    p = node.docker("image", "inspect", "--format", "{{.Id}}", tag, timeout=30)
    return p.stdout.strip() if p.returncode == 0 else None


# -- tiny busybox image ---------------------------------------------------------------------
TINY_DOCKERFILE = """\
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
CMD ["/bin/sh"]
"""


def tiny_tag() -> str:
    """rr-tiny:<hash of Dockerfile + busybox binary>."""
    return f"rr-tiny:{_h(TINY_DOCKERFILE, BUSYBOX.read_bytes())}"


def build_tiny_image(node: DockerNode) -> str:
    """A ~2 MB image with sh/httpd/etc. (FROM scratch + static busybox); built once per node cache."""
    tag = tiny_tag()
    if has_image(node, tag):
        return tag
    ctx = CACHE / f"tiny-{tag.split(':')[1]}"
    if not (ctx / "Dockerfile").exists():
        tmp = Path(tempfile.mkdtemp(prefix="tiny-", dir=_cache()))
        shutil.copy2(BUSYBOX, tmp / "busybox")
        (tmp / "Dockerfile").write_text(TINY_DOCKERFILE)
        shutil.rmtree(ctx, ignore_errors=True)
        tmp.rename(ctx)
    _check(node.docker("build", "-q", "-t", tag, str(ctx), env={"DOCKER_BUILDKIT": "0"}, timeout=120),
           f"{node.name}: docker build {tag}")
    return tag


# -- Debian rootfs -----------------------------------------------------------------------------
def _cache() -> Path:
    CACHE.mkdir(parents=True, exist_ok=True)
    return CACHE


def debian_mirror() -> str:
    """The Debian mirror apt on this machine uses (it is the one reachable here)."""
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*.list")),
             *sorted(Path("/etc/apt/sources.list.d").glob("*.sources"))]
    for f in files:
        try:
            text = f.read_text()
        except OSError:
            continue
        for m in re.finditer(r"^(?:deb\s+(?:\[[^\]]*\]\s+)?|URIs:\s*)(\S+)", text, re.M):
            uri = m.group(1).rstrip("/")
            if uri.startswith("http") and uri.endswith("/debian"):
                return uri
    return FALLBACK_MIRROR


def apt_proxy_env() -> dict[str, str]:
    """Apt's proxy setting (if any) as http_proxy for debootstrap, which does not read apt.conf."""
    env: dict[str, str] = {}
    p = subprocess.run(["apt-config", "shell", "P", "Acquire::http::Proxy"], capture_output=True, text=True)
    m = re.search(r"P='([^']+)'", p.stdout)
    if m and m.group(1).lower() not in ("", "direct", "false"):
        env["http_proxy"] = m.group(1)
    return env


def rootfs_key(include: str = INCLUDE) -> str:
    return _h("debootstrap", SUITE, VARIANT, include, platform.machine())


def rootfs_tarball(log=print, include: str = INCLUDE) -> Path:
    """debootstrap --variant=minbase bookworm with python3 + venv (+ `include`), as a cached tar (37 s cold)."""
    key = rootfs_key(include)
    tar = _cache() / f"rootfs-{SUITE}-{key}.tar"
    if tar.exists():
        return tar
    work = Path(tempfile.mkdtemp(prefix="rootfs-", dir=_cache()))
    try:
        root = work / "root"
        mirror = debian_mirror()
        log(f"debootstrap {SUITE} from {mirror} ...")
        t0 = time.monotonic()
        _check(subprocess.run(
            ["debootstrap", f"--variant={VARIANT}", f"--include={include}", SUITE, str(root), mirror],
            capture_output=True, text=True, timeout=900, env={**os.environ, **apt_proxy_env()}),
            "debootstrap")
        # apt lists and debs are not needed in the image
        for d in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for f in (root / d).glob("*"):
                if f.is_file():
                    f.unlink()
        pyver = _check(subprocess.run(
            ["chroot", str(root), "python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True, text=True, timeout=60), "python3 in rootfs").stdout.strip()
        _check(subprocess.run(["tar", "--numeric-owner", "-C", str(root), "-cf", str(work / "rootfs.tar"), "."],
                              capture_output=True, text=True, timeout=600), "tar rootfs")
        (work / "rootfs.tar").rename(tar)
        tar.with_suffix(".pyver").write_text(pyver + "\n")
        log(f"rootfs ready in {time.monotonic() - t0:.0f}s ({tar.stat().st_size >> 20} MB, python {pyver})")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tar


def rootfs_python(tar: Path) -> str:
    """Python X.Y inside the rootfs: the wheels must match it, not the host's Python."""
    return tar.with_suffix(".pyver").read_text().strip()


def base_tag(include: str = INCLUDE) -> str:
    return f"rr-debian-base:{rootfs_key(include)}"


def ensure_base_image(node: DockerNode, log=print, include: str = INCLUDE) -> str:
    """`docker import` the cached rootfs on the node (no registry, no FROM debian)."""
    tag = base_tag(include)
    if has_image(node, tag):
        return tag
    tar = rootfs_tarball(log, include)
    _check(node.run(["sh", "-c", 'docker import - "$1" < "$2"', "import", tag, str(tar)], timeout=600),
           f"{node.name}: docker import {tag}")
    return tag


# -- Ray wheels and image -----------------------------------------------------------------------
def wheel_platform() -> str:
    m = platform.machine()
    return {"x86_64": "manylinux2014_x86_64", "aarch64": "manylinux2014_aarch64",
            "arm64": "manylinux2014_aarch64"}.get(m, f"manylinux2014_{m}")


def download_wheels(requirement: str, key: str, pyver: str, log=print, extra: Sequence[str] = ()) -> Path:
    """`pip download REQUIREMENT [EXTRA...]` (binary wheels only) for the rootfs' Python and this machine's arch, into a
    cached folder named by `key` (the requirement and version it stands for)."""
    cp = "cp" + pyver.replace(".", "")
    d = _cache() / f"wheels-{key}-{cp}-{wheel_platform()}"
    if (d / ".complete").exists():
        return d
    tmp = Path(tempfile.mkdtemp(prefix="wheels-", dir=_cache()))
    try:
        log(f"pip download {requirement} for {cp} {wheel_platform()} ...")
        # manylinux_2_36 (bookworm's glibc) lets pip take wheels built for newer glibc than manylinux2014's
        # bookworm's glibc is 2.36; pip does not widen an explicit manylinux_2_36 to the tags below it
        platforms = [wheel_platform(), *(wheel_platform().replace("manylinux2014", f"manylinux_2_{v}")
                                         for v in range(17, 37))]
        _check(subprocess.run(
            [sys.executable, "-m", "pip", "download", requirement, *extra, "--only-binary=:all:",
             "--python-version", pyver, "--implementation", "cp", "--abi", cp,
             *[a for p in platforms for a in ("--platform", p)], "--disable-pip-version-check", "-q", "-d", str(tmp)],
            capture_output=True, text=True, timeout=1800), f"pip download {requirement}")
        (tmp / ".complete").write_text("\n".join(sorted(p.name for p in tmp.glob("*.whl"))) + "\n")
        shutil.rmtree(d, ignore_errors=True)
        tmp.rename(d)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return d


def ray_wheels(pyver: str, log=print) -> Path:
    """`pip download ray==RAY_VERSION` (~80 MB, cached)."""
    return download_wheels(f"ray=={RAY_VERSION}", f"ray-{RAY_VERSION}", pyver, log)


RAY_DOCKERFILE = """\
FROM {base} AS build
COPY wheels /wheels
RUN python3 -m venv /opt/ray \\
 && PIP_DISABLE_PIP_VERSION_CHECK=1 /opt/ray/bin/pip install -q --no-index --no-cache-dir \\
      --find-links /wheels ray=={ray}

# second stage: the wheels never reach the final image (smaller docker save to every node)
FROM {base}
COPY --from=build /opt/ray /opt/ray
ENV PATH=/opt/ray/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \\
    VIRTUAL_ENV=/opt/ray LANG=C.UTF-8 RAY_USAGE_STATS_ENABLED=0
RUN python3 -c "import ray; print(ray.__version__)" && ray --version
CMD ["bash"]
"""


def ray_dockerfile() -> str:
    return RAY_DOCKERFILE.format(base=base_tag(), ray=RAY_VERSION)


def wheels_tag(repo: str, dockerfile: str, wheels: Path) -> str:
    """<repo>:<hash of Dockerfile (which names the rootfs hash) + wheel list>."""
    names = sorted(f"{p.name}:{p.stat().st_size}" for p in wheels.glob("*.whl"))
    return f"{repo}:{_h(dockerfile, *names)}"


def ray_tag(wheels: Path) -> str:
    return wheels_tag("rr-ray", ray_dockerfile(), wheels)


def build_wheels_image(node: DockerNode, tag: str, dockerfile: str, wheels: Path, log=print) -> str:
    """Build `tag` on ``node`` from the Debian base image + a folder of wheels (no network); cached by tag."""
    if has_image(node, tag):
        return tag
    ensure_base_image(node, log)
    ctx = Path(tempfile.mkdtemp(prefix="wheelsctx-", dir=_cache()))
    try:
        (ctx / "wheels").mkdir()
        for w in wheels.glob("*.whl"):
            os.link(w, ctx / "wheels" / w.name)  # same filesystem: no copy
        (ctx / "Dockerfile").write_text(dockerfile)
        log(f"{node.name}: docker build {tag} ...")
        _check(node.docker("build", "-q", "-t", tag, str(ctx), env={"DOCKER_BUILDKIT": "0"}, timeout=1800),
               f"{node.name}: docker build {tag}")
        # the untagged build stage would otherwise show up in every `docker images` on the head
        node.docker("image", "prune", "-f", timeout=120)
    finally:
        shutil.rmtree(ctx, ignore_errors=True)
    return tag


def build_ray_image(node: DockerNode, log=print) -> str:
    """Build (or find cached) the Ray image on ``node``: debootstrap rootfs + Ray wheels, no network."""
    wheels = ray_wheels(rootfs_python(rootfs_tarball(log)), log)
    return build_wheels_image(node, ray_tag(wheels), ray_dockerfile(), wheels, log)


def copy_image(src: DockerNode, dst: DockerNode, tag: str, timeout: float = 600) -> bool:
    """`docker save | docker load` from src's daemon to dst's, skipped when dst has the same ID.

    Returns True when bytes were copied.
    """
    src_id = has_image(src, tag)
    if not src_id:
        raise ImageError(f"{src.name} has no image {tag}")
    if has_image(dst, tag) == src_id:
        return False
    save = src.popen(["docker", "save", tag], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        load = dst.popen(["docker", "load", "-q"], stdin=save.stdout, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
        assert save.stdout
        save.stdout.close()  # so save gets SIGPIPE if load dies
        out, err = load.communicate(timeout=timeout)
        save_err = save.communicate(timeout=30)[1]
    except BaseException:
        save.kill()
        raise
    if save.returncode or load.returncode:
        raise ImageError(f"docker save {tag} on {src.name} (rc={save.returncode}: {save_err!r}) | "
                         f"docker load on {dst.name} (rc={load.returncode}: {err!r})")
    if has_image(dst, tag) != src_id:
        raise ImageError(f"{dst.name}: {tag} has a different ID after load")
    return True


def ensure_ray_image(nodes: Sequence[DockerNode], log=print) -> str:
    """Build on the first node, copy to the rest; a no-op on warm caches."""
    tag = build_ray_image(nodes[0], log)
    for n in nodes[1:]:
        copy_image(nodes[0], n, tag)
    return tag


def ensure_tiny_image(nodes: Sequence[DockerNode]) -> str:
    tag = build_tiny_image(nodes[0])
    for n in nodes[1:]:
        copy_image(nodes[0], n, tag)
    return tag


if __name__ == "__main__":  # build against a cluster brought up with tests/harness/testcluster
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import cluster as rc

    c = rc.TestCluster.attach()
    if not c or not c.nodes:
        sys.exit("bring a cluster up first: tests/harness/testcluster up 3")
    t0 = time.monotonic()
    print(ensure_ray_image(c.nodes), f"{time.monotonic() - t0:.1f}s")
