"""Mods: folders (or .zip files) with a run.sh that patch the image before vLLM starts.

Instead of re-patching a fresh container on every launch (the origin's way), a
small image is derived FROM the base image with each mod copied in and its
run.sh run, one layer per mod. Its tag is a hash of the base image ID and the
mods' content, so "applied" is simply "that tag exists", and Docker's layer
cache makes re-application after a partial change cheap.
"""
from __future__ import annotations

import hashlib
import io
import re
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

from ..facts import docker
from . import execute
from .commands import LOCAL, Command, Input, Proof
from ..facts.docker import LABEL
from ..connect import Connector, tail
from ..errors import RunError
from ..mod_spec import Mod, zip_root
from ..render import render_template

MARKER = "runrecipe: applying mod "


def content_hash(mods: tuple[Mod, ...]) -> str:
    """Hash of every byte the mods would put into the image, in order."""
    h = hashlib.sha256()
    for mod in mods:
        h.update(mod.name.encode() + b"\0")
        files = [mod.path] if mod.is_zip else sorted(p for p in mod.path.rglob("*") if p.is_file())
        for path in files:
            h.update(str(path.relative_to(mod.path.parent)).encode() + b"\0")
            h.update(hashlib.sha256(path.read_bytes()).digest())
            h.update(b"x" if path.stat().st_mode & 0o111 else b"-")
    return h.hexdigest()


def derived_tag(base_id: str, mods: tuple[Mod, ...]) -> str:
    digest = hashlib.sha256(f"{base_id}\0{content_hash(mods)}".encode()).hexdigest()
    return f"runrecipe-mods:{digest[:24]}"


def apply(runner: Connector, base_id: str, mods: tuple[Mod, ...]) -> dict[str, str]:
    """Build the derived image (or find it already built) and return its ID: decided here, built by the
    executor with the command build_command names (the one `run-recipe plan` shows)."""
    tag = derived_tag(base_id, mods)
    found = docker.image_id(runner, tag)
    if found:
        return {"image_id": found, "tag": tag}
    info = docker.image_info(runner, base_id)
    if not info:
        raise RunError(f"base image {base_id} vanished before mods could be applied", node=runner.node)
    command = build_command([m.name for m in mods], base_id, tag,
                               lambda: context_tar(base_id, mods, info.get("workdir") or "/"), runner.node)
    res = execute.run(runner, command)
    if not res.ok:
        output = f"{res.stdout}\n{res.stderr}"
        names = re.findall(re.escape(MARKER) + r"([A-Za-z0-9_.-]+)", output)
        failed = names[-1] if names else "?"
        raise RunError(f"mod '{failed}' failed on {runner.node}", node=runner.node,
                       command=f"{failed}/run.sh", exit_code=res.exit_code, tail=tail(output))
    return {"image_id": docker.image_id(runner, tag) or "", "tag": tag}


def build_command(names: Sequence[str], base_id: str, derived: str, context: Callable[[], bytes],
               node: str = LOCAL) -> Command:
    """The mods image's build: its context travels as a tar on stdin (only the mod folders cross the network);
    a failure is returned (check False): mods.apply names the mod whose run.sh failed."""
    what = f"a tar: Dockerfile FROM {base_id} running mods {', '.join(names)}"
    return Command(("docker", "build", "-t", derived, "-"), node, Input(what, context), Proof(derived), check=False)


def context_tar(base_id: str, mods: tuple[Mod, ...], workdir: str) -> bytes:
    """The mods image's build context: each mod staged under mods/<name>, and the Dockerfile that runs them."""
    with tempfile.TemporaryDirectory(prefix="runrecipe-mods-") as tmp:
        ctx = Path(tmp)
        for mod in mods:
            _stage(mod, ctx / "mods" / mod.name)
        (ctx / "Dockerfile").write_text(render_template(
            "mods.Dockerfile.j2", base=base_id, mods=[m.name for m in mods],
            workdir=workdir, marker=MARKER, label=f"{LABEL}.mods"))
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
            tar.add(ctx, arcname=".")
    return buf.getvalue()


def _stage(mod: Mod, dest: Path) -> None:
    if not mod.is_zip:
        shutil.copytree(mod.path, dest, symlinks=True)
        return
    root = zip_root(mod.path, str(mod.path))
    with zipfile.ZipFile(mod.path) as zf:
        for info in zf.infolist():
            rel = PurePosixPath(info.filename)
            if root:
                if rel.parts[:1] != (root,):
                    continue
                rel = PurePosixPath(*rel.parts[1:])
            if not rel.parts or info.is_dir():
                continue
            target = dest.joinpath(*rel.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(info))
            target.chmod(0o755 if rel.name == "run.sh" else 0o644)



