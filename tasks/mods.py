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
from dataclasses import dataclass
from typing import Callable, Sequence
from pathlib import Path, PurePosixPath

from . import docker, execute
from .commands import LOCAL, Command, Input, Proof
from .docker import LABEL, Runner
from .errors import RecipeError, RunError
from .recipe import path_kind
from .render import render_template
from .runner import tail

MARKER = "runrecipe: applying mod "


@dataclass(frozen=True)
class Mod:
    name: str
    path: Path

    @property
    def is_zip(self) -> bool:
        return self.path.suffix == ".zip"


def check(paths: tuple[Path, ...], source: str, field: str = "mods") -> tuple[Mod, ...]:
    """Every mod must exist and hold a run.sh; the error names the recipe (or flag) and the mod."""
    mods = []
    for path in paths:
        kind = path_kind(path)
        if kind == "dir":
            if not (path / "run.sh").is_file():
                raise _missing(source, path, "has no run.sh", field)
        elif path.suffix == ".zip" and kind == "file":
            _zip_root(path, source, field)
        else:
            raise _missing(source, path, "does not exist (a folder or .zip with run.sh)", field)
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem if path.suffix == ".zip" else path.name)
        mods.append(Mod(name, path))
    return tuple(mods)


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


def apply(runner: Runner, base_id: str, mods: tuple[Mod, ...]) -> dict[str, str]:
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
    res = execute.run(runner, command)  # type: ignore[arg-type]
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
    root = _zip_root(mod.path, str(mod.path))
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


def _zip_root(path: Path, source: str, field: str = "mods") -> str:
    """The folder inside the zip that holds run.sh ('' for the top); unsafe names are refused."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise _missing(source, path, f"is not a readable zip: {exc}", field) from None
    names = [PurePosixPath(i.filename) for i in infos]
    if any(n.is_absolute() or ".." in n.parts for n in names):
        raise _missing(source, path, "has entries outside its own folder", field)
    folders = {parent for n in names for parent in n.parents}
    both = sorted(str(n) for n, i in zip(names, infos) if not i.is_dir() and n in folders)
    if both:  # `a` and `a/b`: no folder can hold both, so the mod could not be unpacked
        raise _missing(source, path, f"holds '{both[0]}' both as a file and as the folder of other entries", field)
    if PurePosixPath("run.sh") in names:
        return ""
    roots = {n.parts[0] for n in names if n.parts}
    if len(roots) == 1 and PurePosixPath(next(iter(roots)), "run.sh") in names:
        return next(iter(roots))
    raise _missing(source, path, "has no run.sh", field)


def _missing(source: str, path: Path, problem: str, field: str = "mods") -> RecipeError:
    """A mod that cannot be applied: the error names the recipe (or flag), the mod and what is wrong."""
    where = f"{source}: {field}:" if field else f"{source}"
    return RecipeError(f"{where} '{path}' {problem}", field=(field,) if field else (), reason=problem,
                       fix="give each mod a folder (or .zip) holding run.sh")
