"""Shared pytest fixtures.

Docker fixtures talk to a real dockerd: $DOCKER_HOST if it answers, else the
private test daemon from tests/harness/dockerd.sh (started on demand, root only).
Containers a test starts should carry the label runrecipe.test=1; the `docker`
fixture adds it (and this session's label) to every `docker run`/`create`.
At session end this session's containers are removed: those with its session
label, and those labelled runrecipe.test=1 without a session label that did not
exist when the session began. Other sessions sharing the daemon (developers
running tests side by side) keep theirs.
"""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# Make tests/harness importable whatever pytest's import mode or rootdir.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import engine, images  # noqa: E402

# ----------------------------------------------------------------------------- CI strictness
# Locally a missing dockerd, netns cluster or linter is a skip. Under CI (CI=true) the real parts are the
# point of the suite: a skipped docker, cluster or tools test fails the run instead of passing quietly.
STRICT_MARKERS = ("docker", "cluster", "tools")
_FIXTURE_MARKERS = {"docker_host": "docker", "cluster3": "cluster"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test that needs dockerd or the netns cluster through its fixtures is marked so, even if unmarked."""
    for item in items:
        for fixture, marker in _FIXTURE_MARKERS.items():
            if fixture in getattr(item, "fixturenames", ()) and not item.get_closest_marker(marker):
                item.add_marker(marker)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    strict = [m for m in STRICT_MARKERS if item.get_closest_marker(m)]
    if report.skipped and strict and os.environ.get("CI") == "true" and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"CI=true: a {'/'.join(strict)} test may not be skipped ({reason})"


# ----------------------------------------------------------------------------- the environment, read once
@pytest.fixture(autouse=True)
def _settings_read_afresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """tasks/settings.py reads RUNRECIPE_HOME, HF_HOME, ... once per process; each test starts from its own
    environment, and a test that changes one through `monkeypatch` sees the change at once."""
    from tasks import settings

    def afresh(change: Callable[..., None]) -> Callable[..., None]:
        def changed(*args: object, **kwargs: object) -> None:
            change(*args, **kwargs)
            settings.forget()
        return changed

    monkeypatch.setenv = afresh(monkeypatch.setenv)  # type: ignore[method-assign]
    monkeypatch.delenv = afresh(monkeypatch.delenv)  # type: ignore[method-assign]
    settings.forget()
    yield
    settings.forget()


TEST_LABEL = "runrecipe.test=1"
SESSION_KEY = "runrecipe.test.session"
SESSION_ID = uuid.uuid4().hex[:12]
SESSION_LABEL = f"{SESSION_KEY}={SESSION_ID}"

DockerRun = Callable[..., "subprocess.CompletedProcess[str]"]


def _test_containers(host: str) -> dict[str, str]:
    """{container id: session label value or ""} for all runrecipe.test=1 containers."""
    out = engine.run_docker(host, "ps", "-a", "--no-trunc", "--filter", f"label={TEST_LABEL}",
                            "--format", f'{{{{.ID}}}} {{{{.Label "{SESSION_KEY}"}}}}',
                            check=False).stdout
    return {parts[0]: "".join(parts[1:]) for parts in (line.split() for line in out.splitlines())
            if parts}


@pytest.fixture(scope="session")
def docker_host() -> Iterator[str]:
    """DOCKER_HOST of a working dockerd; removes this session's test containers at the end.

    Skips only when no daemon answers and we are not root (so cannot start one);
    as root, a daemon that will not start is a failure, not a skip.
    """
    try:
        host = engine.docker_host()
    except engine.DockerUnavailable as exc:
        if os.geteuid() != 0:
            pytest.skip(f"needs a dockerd: {exc}")
        raise
    before = _test_containers(host)
    yield host
    ours = [cid for cid, sess in _test_containers(host).items()
            if sess == SESSION_ID or (not sess and cid not in before)]
    if ours:
        engine.run_docker(host, "rm", "-f", *ours, check=False)


@pytest.fixture(scope="session")
def docker(docker_host: str) -> DockerRun:
    """`docker(*args) -> CompletedProcess` (text, check=True) bound to the test daemon.

    `run`/`create` get `--label runrecipe.test=1` and this session's label added,
    so the session-end cleanup finds them. Raises CalledProcessError with
    docker's stderr in the message on failure.
    """
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        n = 2 if args[:1] == ("container",) else 1
        if args[n - 1:n] in (("run",), ("create",)):
            args = (*args[:n], "--label", TEST_LABEL, "--label", SESSION_LABEL, *args[n:])
        return engine.run_docker(docker_host, *args)
    return run


@pytest.fixture(scope="session")
def standin_docker_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A product-style Docker folder (Dockerfile, .mxfp4, .wheels + context) for the stand-in."""
    return images.standin_docker_dir(tmp_path_factory.mktemp("standin-docker"))


@pytest.fixture(scope="session")
def cpu_docker_dir(docker_host: str) -> Path:
    """A Docker folder with the repo's Dockerfile.cpu and an offline wheelhouse; its image (cpuengine.TAG)
    built on the test dockerd by runrecipe's own build step (~4 min cold, then kept)."""
    import shutil

    from harness import cpuengine
    from harness.gatewayimage import Daemon

    if not shutil.which("debootstrap"):
        pytest.skip("the CPU image's base needs debootstrap (apt-get install debootstrap)")
    log = lambda m: print(f"[cpu] {m}")  # noqa: E731
    cpuengine.ensure_base(Daemon(docker_host), log=log)
    folder = cpuengine.docker_dir(log=log)
    cpuengine.ensure_built(docker_host, folder, log=log)
    return folder


@pytest.fixture(scope="session")
def standin_image(docker_host: str) -> str:
    """Image ID of the stand-in vLLM image (tag rr-standin:<content hash>), built once."""
    return images.ensure_standin_image("rr-standin", docker_host)
