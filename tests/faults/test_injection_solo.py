"""Injection, solo, on the real test dockerd: shell metacharacters in every value a user or recipe gives
arrive literally (or are refused with a message); canary files on the host and in the container prove
nothing was executed."""
from __future__ import annotations

import glob
import os
from pathlib import Path

import pytest

from .conftest import Project, free_port

CANARY = "/tmp/rr-inj-canary"


def evil(tag: str) -> str:
    """A value that runs `touch CANARY-tag` if any layer evaluates it (one per quoting style)."""
    c = f"{CANARY}-{tag}"
    return (f"$(touch {c}-dollar) `touch {c}-tick` ; touch {c}-semi && touch {c}-and | touch {c}-pipe "
            f"'q' \"dq\" \\ x\ny > {c}-redir")


def canaries_on_host() -> list[str]:
    return glob.glob(f"{CANARY}*")


@pytest.fixture(autouse=True)
def _clean_canaries():
    for path in canaries_on_host():
        os.unlink(path)
    yield
    found = canaries_on_host()
    for path in found:
        os.unlink(path)
    assert not found, f"something executed on the host: {found}"


RECIPE = """\
    recipe_version: "1"
    name: Injection
    container: {image}
    defaults:
      port: {port}
      host: plain-host
      served: plain
      from_default: {from_default}
    env:
      EVIL_ENV: {env_value}
    command: |
      vllm serve org/m --port {{port}} --host 127.0.0.1 \\
          --x-host {{host}} --x-served {{served}} \\
          --x-default '{{from_default}}' --x-dq "{{from_default}}" --x-env "$EVIL_ENV"
    """


def yaml_str(value: str) -> str:
    import json

    return json.dumps(value)  # JSON strings are YAML double-quoted strings


def test_values_arrive_literally_in_a_real_solo_launch(project: Project, standin_tag: str) -> None:
    port = free_port()
    project.recipe("inj", RECIPE.format(image=standin_tag, port=port, from_default=yaml_str(evil("default")),
                                        env_value=yaml_str(evil("env"))))
    host_value, served_value = evil("host"), evil("o")
    extra = [evil("extra"), "--x-quote", "it's", "$(touch /tmp/rr-inj-canary-x2)"]
    res = project.cli("inj", "-d", "--ready-timeout", "20", "--host", host_value, "-o", f"served={served_value}",
                      "--", *extra)
    assert res.returncode == 0, res.stderr
    (c,) = project.containers("inj")
    argv = project.argv_in(c["Id"])
    assert argv == ["serve", "org/m", "--port", str(port), "--host", "127.0.0.1",
                    "--x-host", host_value, "--x-served", served_value,
                    "--x-default", evil("default"), "--x-dq", evil("default"), "--x-env", evil("env"), *extra]
    inside = project.docker("exec", c["Id"], "sh", "-c", f"ls {CANARY}* 2>/dev/null; true").stdout
    assert inside.strip() == "", f"something executed in the container: {inside}"
    assert canaries_on_host() == []


@pytest.mark.parametrize("name", ["x;touch /tmp/rr-inj-canary-name", "$(touch /tmp/rr-inj-canary-name)",
                                  "-rm", "a b", "a\nb", "ü"])
def test_invalid_container_name_is_refused_with_a_message(project: Project, standin_tag: str,
                                                         name: str) -> None:
    project.recipe("badname", RECIPE.format(image=standin_tag, port=free_port(), from_default="x",
                                            env_value="y"))
    res = project.cli("badname", "-d", "--ready-timeout", "30", "--name", name)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    # Refused by argparse (a value starting with '-') or by the plan, before any docker call.
    assert "Traceback" not in out
    assert "error: argument --name" in res.stderr or "is not a valid container name" in res.stderr, out
    assert project.containers("badname") == []


def test_invalid_container_name_is_refused_before_docker(project: Project, standin_tag: str) -> None:
    project.recipe("badname2", RECIPE.format(image=standin_tag, port=free_port(), from_default="x",
                                             env_value="y"))
    res = project.cli("badname2", "--dry-run", "--name", "x;touch /tmp/rr-inj-canary-name")
    assert res.returncode != 0 and res.stderr.startswith("Error:")


@pytest.mark.parametrize("image", ["img;touch /tmp/rr-inj-canary-img", "$(touch /tmp/rr-inj-canary-img)",
                                   "`touch /tmp/rr-inj-canary-img`", "-v", "a b", "UPPER/case"])
def test_odd_image_names_are_refused_with_a_message(project: Project, standin_tag: str, image: str) -> None:
    project.recipe("badimg", RECIPE.format(image=standin_tag, port=free_port(), from_default="x", env_value="y"))
    res = project.cli("badimg", "-d", "--ready-timeout", "30", "-t", image)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert "Traceback" not in out
    assert ("error: argument -t/--container" in res.stderr or "invalid reference format" in out
            or "cannot inspect image" in out or "Error:" in res.stderr), out
    assert project.containers("badimg") == []


def test_override_keys_are_checked(project: Project, standin_tag: str) -> None:
    project.recipe("badkey", RECIPE.format(image=standin_tag, port=free_port(), from_default="x", env_value="y"))
    res = project.cli("badkey", "--dry-run", "-o", "$(touch /tmp/rr-inj-canary-key)=1")
    assert res.returncode != 0 and res.stderr.startswith("Error: -o:") and "Traceback" not in res.stderr
