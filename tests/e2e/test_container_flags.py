"""The origin's container flags on the real test dockerd, solo: a secret -e reaches the server's process
and nowhere else; the compile caches are created, mounted, and outlive a relaunch; -v mounts as given."""
from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from .conftest import Project, free_port

MARK = "rrflag" + uuid.uuid4().hex
STANDIN_TAG = "rr-flags-standin:latest"
CACHES = (".cache/vllm", ".cache/flashinfer", ".triton", ".tilelang")


@pytest.fixture
def standin(project: Project, standin_image: str) -> str:
    project.docker("tag", standin_image, STANDIN_TAG)
    return STANDIN_TAG


def environ(project: Project, cid: str) -> dict[str, str]:
    """The server process's environment: PID 1 is docker's init, which passes its environment on."""
    raw = project.docker("exec", cid, "cat", "/proc/1/environ").stdout
    return dict(e.split("=", 1) for e in raw.split("\0") if "=" in e)


def test_secret_env_travels_in_a_file_and_caches_survive_a_relaunch(project: Project, standin: str,
                                                                     tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    project.env["HOME"] = str(home)
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "note").write_text("from the host")
    port = free_port()
    project.recipe("flags", f"""\
        recipe_version: "1"
        name: Flags
        container: {standin}
        defaults: {{port: {port}}}
        command: vllm serve org/m --port {{port}} --host 127.0.0.1
        """)
    flags = ["-e", f"HF_TOKEN={MARK}a", "-e", f"MY_API_KEY={MARK}b", "-e", "PLAIN=visible",
             "-v", f"{shared}:/shared:ro", "--ready-timeout", "30"]
    first = project.cli("flags", "-d", *flags)
    assert first.returncode == 0, first.stderr
    (c,) = project.containers("flags")

    seen = environ(project, c["Id"])
    assert (seen["HF_TOKEN"], seen["MY_API_KEY"], seen["PLAIN"]) == (f"{MARK}a", f"{MARK}b", "visible")
    assert project.docker("exec", c["Id"], "cat", "/shared/note").stdout == "from the host"
    script = project.docker("exec", c["Id"], "cat", "/runrecipe/launch.sh").stdout
    argv_file = project.docker("exec", c["Id"], "cat", "/tmp/vllm-argv").stdout
    inspect = json.dumps({k: c[k] for k in ("Path", "Args")} | {k: c["Config"].get(k) for k in
                                                                   ("Cmd", "Entrypoint", "Labels")})
    state = "".join(p.read_text(errors="replace") for p in (project.root / ".runrecipe").rglob("*")
                    if p.is_file() and p.stat().st_size < 10_000_000)
    leftovers = "".join(p.read_text(errors="replace") for p in Path("/tmp").glob("tmp.*")
                        if p.is_file() and p.stat().st_size < 100_000)
    places = {"cli output": first.stdout + first.stderr, "launch.sh": script, "vllm argv": argv_file,
              "docker inspect Path/Args/Cmd/Entrypoint/Labels": inspect, "state dir": state,
              "a leftover env file in /tmp": leftovers}
    assert [where for where, text in places.items() if MARK in text] == []

    # The compile caches exist under the node user's home and are the container's.
    for folder in CACHES:
        assert (home / folder).is_dir(), folder
    (home / ".cache/vllm/kept").write_text("compiled")
    assert project.docker("exec", c["Id"], "cat", "/root/.cache/vllm/kept").stdout == "compiled"

    # Same flags: the same container (the secret's digest is stable); a changed secret value restarts it.
    again = project.cli("flags", "-d", *flags)
    assert again.returncode == 0, again.stderr
    assert [x["Id"] for x in project.containers("flags")] == [c["Id"]]
    flags[1] = f"HF_TOKEN={MARK}c"
    changed = project.cli("flags", "-d", *flags)
    assert changed.returncode == 0, changed.stderr
    (c2,) = project.containers("flags")
    assert c2["Id"] != c["Id"] and environ(project, c2["Id"])["HF_TOKEN"] == f"{MARK}c"

    # A changed port relaunches; what the caches held is still there, on the host and in the container.
    port2 = free_port()
    moved = project.cli("flags", "-d", *flags, "--port", str(port2))
    assert moved.returncode == 0, moved.stderr
    (c3,) = project.containers("flags")
    assert c3["Id"] != c2["Id"]
    assert project.docker("exec", c3["Id"], "cat", "/root/.cache/vllm/kept").stdout == "compiled"

    # The cache mounts are not in the launch hash: --no-cache-dirs alone restarts nothing.
    bare = project.cli("flags", "-d", *flags, "--port", str(port2), "--no-cache-dirs")
    assert bare.returncode == 0, bare.stderr
    assert [x["Id"] for x in project.containers("flags")] == [c3["Id"]]
