"""`--setup --no-build`: an image the user already has (pulled, loaded or built elsewhere: no inputs label
of ours) is used as it is, never built; a missing one stops the run with the two ways out."""
from __future__ import annotations

from .conftest import Project, free_port, get_json
from .test_cpu import cpu_recipe
from .test_solo import executed


def image_id(project: Project, ref: str) -> str:
    return project.docker("image", "inspect", "-f", "{{.Id}}", ref).stdout.strip()


def test_an_image_we_did_not_build_serves_as_it_is(project: Project, standin_image: str) -> None:
    port = free_port()
    project.docker("tag", standin_image, "rr-e2e-mine")
    project.recipe("mine", cpu_recipe("mine", port, build_args="", env="VLLM_CPU_KVCACHE_SPACE: '1'"))
    plain = project.cli("mine", "--setup", "--dry-run")  # without --no-build, --setup would build over it
    (row,) = [ln for ln in plain.stdout.splitlines() if ln.strip().startswith("build:rr-e2e-mine")]
    assert "would run: image rr-e2e-mine was built from other inputs" in row, plain.stdout

    dry = project.cli("mine", "--setup", "--no-build", "--dry-run")
    assert "image:     rr-e2e-mine (as it is on this machine: --no-build)" in dry.stdout, dry.stdout
    (row,) = [ln for ln in dry.stdout.splitlines() if ln.strip().startswith("build:rr-e2e-mine")]
    assert "up to date: rr-e2e-mine is on this machine (--no-build: used as it is, not built)" in row, row

    res = project.cli("mine", "--setup", "--no-build", "-d")
    assert res.returncode == 0, res.stderr
    assert "build:rr-e2e-mine" not in executed(res.stdout) and "-- build:rr-e2e-mine" in res.stdout, res.stdout
    assert image_id(project, "rr-e2e-mine") == standin_image
    (c,) = project.containers("mine")
    assert c["Image"] == standin_image
    assert get_json(f"http://127.0.0.1:{port}/v1/models")["data"][0]["id"] == "org/model"

    again = project.doit("run", "recipe=mine", "no_build=1")  # doit's spelling; nothing changed, nothing runs
    assert again.returncode == 0 and executed(again.stdout) == [], again.stdout + again.stderr
    assert image_id(project, "rr-e2e-mine") == standin_image


def test_a_missing_image_is_named_with_the_ways_out_and_nothing_starts(project: Project) -> None:
    """A CPU recipe whose Dockerfile.cpu this Docker folder does not even hold: nothing reads it."""
    project.recipe("gone", cpu_recipe("gone", free_port()))
    dockerfile = f"{project.env['RUNRECIPE_DOCKER_DIR']}/Dockerfile.cpu"
    for tag, args in (("rr-e2e-gone", ["--setup", "--no-build", "-d"]),
                      ("rr-e2e-gone2", ["-t", "rr-e2e-gone2", "--build-only", "--no-build"])):
        run = project.cli("gone", *args)
        assert run.returncode == 1, run.stdout + run.stderr
        assert (f"Error: image {tag} is not on this machine: docker pull/load it, or drop --no-build (doit: "
                f"no_build=1) to build it from {dockerfile}") in run.stderr, run.stderr
        assert "Traceback" not in run.stderr
    assert project.containers("gone") == []
    assert project.docker("images", "-q", "--filter", "reference=rr-e2e-gone*").stdout.strip() == ""
