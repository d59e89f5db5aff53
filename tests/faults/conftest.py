"""Fixtures for the fault suite: the e2e Project (a throw-away project on the test dockerd), re-exported,
and the stand-in image under a tag recipes can name, so solo launches need no build."""
from __future__ import annotations

import pytest

from e2e.conftest import Project, free_port, project  # noqa: F401 - re-exported fixtures (tests/ is on sys.path)

STANDIN_TAG = "rr-faults-standin:latest"


@pytest.fixture(scope="session")
def standin_tag(docker, standin_image: str) -> str:
    """The stand-in vLLM image, tagged for recipes: `container: rr-faults-standin:latest`."""
    docker("tag", standin_image, STANDIN_TAG)
    return STANDIN_TAG
