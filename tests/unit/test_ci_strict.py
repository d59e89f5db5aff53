"""Under CI=true a skipped docker, cluster or tools test fails the run (tests/conftest.py's hooks); locally it
stays a skip. Proven on a throw-away suite that loads this suite's conftest hooks."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"

SAMPLE = '''
import pytest

@pytest.fixture
def docker_host():
    pytest.skip("no dockerd here")

@pytest.mark.docker
def test_marked_docker():
    pytest.skip("no dockerd here")

@pytest.mark.cluster
def test_marked_cluster():
    pytest.skip("no netns cluster here")

def test_needs_docker_through_its_fixture(docker_host):
    pass

@pytest.mark.skipif(True, reason="no linter")
@pytest.mark.tools
def test_linter():
    pass

def test_plain_skip():
    pytest.skip("nothing to do with the real parts")

def test_passes():
    pass
'''


def run_sample(tmp_path: Path, ci: str | None) -> str:
    (tmp_path / "conftest.py").write_text(textwrap.dedent(f'''
        import importlib.util
        spec = importlib.util.spec_from_file_location("rr_conftest", {str(CONFTEST)!r})
        rr = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(rr)
        pytest_collection_modifyitems = rr.pytest_collection_modifyitems
        pytest_runtest_makereport = rr.pytest_runtest_makereport

        def pytest_configure(config):
            for m in rr.STRICT_MARKERS:
                config.addinivalue_line("markers", m + ": test")
        '''))
    (tmp_path / "test_sample.py").write_text(SAMPLE)
    env = {k: v for k, v in os.environ.items() if k != "CI"} | ({"CI": ci} if ci is not None else {})
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rfEs", "-p", "no:cacheprovider", str(tmp_path)],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    return res.stdout + res.stderr


@pytest.mark.parametrize("ci", [None, "false"])
def test_outside_ci_a_skip_stays_a_skip(tmp_path: Path, ci: str | None) -> None:
    assert "1 passed, 5 skipped" in run_sample(tmp_path, ci)


def test_under_ci_skips_of_the_real_parts_fail(tmp_path: Path) -> None:
    out = run_sample(tmp_path, "true")
    # a skip in the call fails the test; one in setup (fixture, skipif) is an error: both fail the run
    assert "2 failed, 1 passed, 1 skipped, 2 errors" in out, out
    for verdict, name in (("FAILED", "test_marked_docker"), ("FAILED", "test_marked_cluster"),
                          ("ERROR", "test_needs_docker_through_its_fixture"), ("ERROR", "test_linter")):
        assert f"{verdict} test_sample.py::{name}" in out, out
    assert "CI=true: a docker test may not be skipped (Skipped: no dockerd here)" in out
