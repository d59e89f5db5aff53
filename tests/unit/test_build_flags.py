"""The origin's build_args beyond the seed's three: fresh-clone flags and build-time vLLM pull requests."""
from __future__ import annotations

from pathlib import Path

import pytest

from tasks import build_spec
from tasks.ops import image
from tasks.errors import RecipeError


def spec(*build_args: str) -> build_spec.BuildSpec:
    return build_spec.build_spec("t", build_args, Path("/nonexistent"), "r.yaml")


def test_origin_recipe_build_args_load_as_written() -> None:
    """deepseek-v4-flash-vision-exp (origin-facts 3.3) writes one entry with a flag and its value."""
    s = spec("--exp-b12x", "--rebuild-vllm", "--apply-vllm-pr 634")
    assert s.dockerfile == "Dockerfile"
    assert dict(s.build_args) == {"ENABLE_B12X": "1", "VLLM_PRS": "634"}
    assert s.fresh == ("CACHEBUST_VLLM",)


def test_fresh_args_get_the_build_time_but_stay_out_of_the_hash(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    plain = build_spec.build_spec("t", (), tmp_path, "r.yaml")
    fresh = build_spec.build_spec("t", ("--rebuild-vllm", "--rebuild-flashinfer"), tmp_path, "r.yaml")
    assert fresh.inputs_hash() != plain.inputs_hash()  # asking for a fresh clone is a different build
    assert fresh.inputs_hash() == build_spec.build_spec("t", ("--rebuild-flashinfer", "--rebuild-vllm"), tmp_path,
                                                   "r.yaml").inputs_hash()
    argv = image.build_argv(fresh)
    stamps = {a.split("=")[0]: a.split("=")[1] for a in argv if a.startswith("CACHEBUST_")}
    assert set(stamps) == {"CACHEBUST_VLLM", "CACHEBUST_FLASHINFER"} and all(v.isdigit() for v in stamps.values())


def test_a_plan_shows_the_build_time_by_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache-bust value is the time the build runs: a plan made earlier shows the same text as the
    executor's record, with the value by name; the argv run carries the number."""
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    fresh = build_spec.build_spec("t", ("--rebuild-vllm",), tmp_path, "r.yaml")
    monkeypatch.setattr(image.time, "time", lambda: 1000.0)
    planned = image.build_command(fresh)
    monkeypatch.setattr(image.time, "time", lambda: 2000.0)
    ran = image.build_command(fresh)
    assert "CACHEBUST_VLLM=1000" in planned.argv and "CACHEBUST_VLLM=2000" in ran.argv
    assert planned.shown() == ran.shown() and "--build-arg 'CACHEBUST_VLLM=<build time>'" in ran.shown()


def test_pull_requests_by_number_or_url_in_order_without_repeats() -> None:
    s = spec("--apply-vllm-pr 634", "--apply-vllm-pr", "https://github.com/vllm-project/vllm/pull/41000")
    assert dict(s.build_args)["VLLM_PRS"] == "634 41000"


@pytest.mark.parametrize("entry, said", [
    ("--apply-vllm-pr", "needs a pull request number"),
    ("--apply-vllm-pr abc", "got 'abc'"),
    ("--apply-vllm-pr 12;id", "got '12;id'"),
    ("--rebuild-vlm", "unknown build flag '--rebuild-vlm'"),
    ("--apply-vllm-pr 'x", "cannot be split"),
])
def test_bad_entries_name_the_field(entry: str, said: str) -> None:
    with pytest.raises(RecipeError) as err:
        spec("--exp-b12x", entry)
    assert said in str(err.value) and err.value.field == ("build_args", 1) and err.value.file == "r.yaml"


def test_cpu_selects_the_cpu_dockerfile_and_marks_the_spec() -> None:
    """`--cpu` is the one source of "this run needs no GPU"; --rebuild-vllm may come with it."""
    cpu = spec("--cpu", "--rebuild-vllm")
    assert (cpu.dockerfile, cpu.build_args, cpu.fresh, cpu.cpu) == ("Dockerfile.cpu", (), ("CACHEBUST_VLLM",), True)
    assert build_spec.is_cpu(("--cpu",)) and not build_spec.is_cpu(("--exp-mxfp4",)) and not spec().cpu


@pytest.mark.parametrize("entry", ["--exp-mxfp4", "--use-wheels", "--exp-b12x", "--pre-tf", "--apply-vllm-pr 634",
                                   "--rebuild-flashinfer"])
def test_cpu_refuses_flags_of_the_gpu_builds_naming_the_entry_and_the_fix(entry: str) -> None:
    with pytest.raises(RecipeError) as err:
        spec("--cpu", entry)
    flag = entry.split()[0]
    assert err.value.field == ("build_args", 1) and err.value.file == "r.yaml"
    assert f"r.yaml: build_args: '{flag}' cannot be combined with --cpu" in str(err.value)
    assert err.value.fix == f"remove '{flag}', or remove --cpu to build the GPU image"
    assert str(err.value).endswith(f"; fix: {err.value.fix}")
    assert build_spec.flag_problems((entry, "--cpu")) == [(0, err.value.reason, err.value.fix)]  # either order
