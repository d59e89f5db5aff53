"""Recipe loading: the origin's format loads unchanged; every bad input names file and field."""
from __future__ import annotations

from pathlib import Path

import pytest

from tasks.errors import RecipeError
from tasks.recipe import catalogue, find, load, load_named, parse

ORIGIN_STYLE = """\
recipe_version: "1"
name: GLM-4.7-Flash-AWQ
description: test copy of an origin recipe
model: cyankiwi/GLM-4.7-Flash-AWQ-4bit
container: vllm-node
mods: []
defaults:
  port: 8000
  host: 0.0.0.0
  tensor_parallel: 1
  gpu_memory_utilization: 0.8
env:
  VLLM_DISTRIBUTED_EXECUTOR_CONFIG: '{"placement_group_options":{"strategy":"SPREAD"}}'
  FLAG: true
command: |
  vllm serve cyankiwi/GLM-4.7-Flash-AWQ-4bit \\
      --port {port} \\
      --host {host}
"""


def test_origin_recipe_loads_unchanged(tmp_path: Path) -> None:
    r = parse(ORIGIN_STYLE, tmp_path / "glm.yaml")
    assert (r.name, r.container, r.model, r.mode) == ("GLM-4.7-Flash-AWQ", "vllm-node",
                                                      "cyankiwi/GLM-4.7-Flash-AWQ-4bit", "either")
    assert r.defaults["port"] == 8000 and r.defaults["gpu_memory_utilization"] == 0.8
    assert r.env["VLLM_DISTRIBUTED_EXECUTOR_CONFIG"] == '{"placement_group_options":{"strategy":"SPREAD"}}'
    assert r.env["FLAG"] == "True"
    assert r.recipe_version == "1" and r.warnings == ()


V = 'recipe_version: "1"\n'


@pytest.mark.parametrize("line", ["", "recipe_version:\n", 'recipe_version: ""\n'])
def test_a_recipe_without_recipe_version_is_refused_naming_the_line_to_add(tmp_path: Path, line: str) -> None:
    """The origin refuses it (`Recipe missing required field`); a recipe written here must run there."""
    with pytest.raises(RecipeError) as err:
        parse("name: n\ncontainer: c\ncommand: vllm serve m\n" + line, tmp_path / "old.yaml")
    assert str(err.value) == f"{tmp_path / 'old.yaml'}: missing required field 'recipe_version': add the line " \
                             '`recipe_version: "1"`'
    assert (err.value.file, err.value.field) == (str(tmp_path / "old.yaml"), ("recipe_version",))


@pytest.mark.parametrize("text, expected", [
    ("container: c\ncommand: x\n", "missing required field 'name'"),
    ("recipe_version: '1'\nname: n\ncommand: x\n", "missing required field 'container'"),
    ("recipe_version: '1'\nname: n\ncontainer: c\n", "missing required field 'command'"),
    (V + "name: n\ncontainer: c\ncommand: x\ncluster_only: true\nsolo_only: true\n", "both true"),
    (V + "name: n\ncontainer: c\ncommand: x\ncluster_only: 'yes'\n", "'cluster_only' must be true or false"),
    (V + "name: n\ncontainer: c\ncommand: x\nmods: mods/x\n", "'mods' must be a list"),
    (V + "name: n\ncontainer: c\ncommand: x\ndefaults: [1]\n", "'defaults' must be a mapping"),
    (V + "name: n\ncontainer: c\ncommand: x\ndefaults:\n  a: [1]\n", "defaults.a must be a single value"),
    (V + "name: n\ncontainer: c\ncommand: x\nenv:\n  1BAD: x\n", "'1BAD' is not a valid environment variable name"),
    (V + "name: [a]\ncontainer: c\ncommand: x\n", "field 'name' must be text"),
    ("- a\n- b\n", "expected a mapping of fields"),
    ("name: n\n  container: : c\n", "YAML syntax error at line 2"),
])
def test_bad_recipes_name_file_and_field(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "bad.yaml"
    with pytest.raises(RecipeError) as err:
        parse(text, path)
    assert str(path) in str(err.value)
    assert expected in str(err.value)


def test_yaml_error_gives_line_and_column(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"line 2, column 12: mapping values are not allowed"):
        parse("name: n\n  container: : c\n", tmp_path / "x.yaml")


def test_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    bomb = "a: &a [x, x, x, x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [{', '.join(['*' + p] * 12)}]\n" for p, c in zip("abcdefghi", "bcdefghij"))
    with pytest.raises(RecipeError, match="aliases"):
        parse(bomb, tmp_path / "bomb.yaml")


def test_unknown_key_warns_with_suggestion(tmp_path: Path) -> None:
    r = parse("recipe_version: '1'\nname: n\ncontainer: c\ncommand: x\ndefault:\n  port: 1\n", tmp_path / "w.yaml")
    assert len(r.warnings) == 1 and "did you mean 'defaults'" in r.warnings[0]


def test_lookup_path_name_subfolder_and_ambiguity(tmp_path: Path) -> None:
    rd = tmp_path / "recipes"
    (rd / "2x").mkdir(parents=True)
    (rd / "4x").mkdir()
    body = "recipe_version: '1'\nname: n\ncontainer: c\ncommand: x\n"
    for rel in ("top.yaml", "2x/deep.yml", "2x/twin.yaml", "4x/twin.yaml"):
        (rd / rel).write_text(body)
    assert find(str(rd / "top"), rd) == rd / "top.yaml"
    assert find("top", rd) == rd / "top.yaml"
    assert find("deep", rd) == rd / "2x" / "deep.yml"
    assert load_named("deep", rd).id == "2x/deep"
    assert find("4x/twin", rd) == rd / "4x" / "twin.yaml"
    with pytest.raises(RecipeError) as err:
        find("twin", rd)
    assert "2x/twin.yaml" in str(err.value) and "4x/twin.yaml" in str(err.value)
    with pytest.raises(RecipeError, match="not found"):
        find("nope", rd)


def test_catalogue_lists_broken_recipes_with_their_error(tmp_path: Path) -> None:
    rd = tmp_path / "recipes"
    (rd / "sub").mkdir(parents=True)
    (rd / "ok.yaml").write_text("recipe_version: '1'\nname: ok\ncontainer: c\ncommand: x\n")
    (rd / "sub" / "broken.yaml").write_text("name: [\n")
    rows = {row.id: row for row in catalogue(rd)}
    assert rows["ok"].recipe is not None and rows["ok"].error == ""
    assert rows["sub/broken"].recipe is None and "YAML syntax error" in rows["sub/broken"].error


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="cannot read"):
        load(tmp_path / "missing.yaml")
    bad = tmp_path / "latin.yaml"
    bad.write_bytes(b"name: \xff\n")
    with pytest.raises(RecipeError, match="not UTF-8"):
        load(bad)


BASE = "name: V\ncontainer: img\nmodel: org/m\ncommand: vllm serve org/m\n"


@pytest.mark.parametrize("line, warned", [('recipe_version: "1"\n', False), ("recipe_version: 1\n", False),
                                          ('recipe_version: "2"\n', True), ("recipe_version: 1.1\n", True)])
def test_an_unknown_recipe_version_warns_naming_the_supported_one(tmp_path: Path, line: str, warned: bool) -> None:
    recipe = parse(BASE + line, tmp_path / "v.yaml")
    notes = [w for w in recipe.warnings if "recipe_version" in w]
    assert bool(notes) == warned, recipe.warnings
    if warned:
        assert f"v.yaml: recipe_version '{recipe.recipe_version}' is not one this tool knows (it reads version 1)" \
            in notes[0]


def test_model_revision_is_the_revision_field(tmp_path: Path) -> None:
    from tasks.plan import Options, main_model

    recipe = parse(V + BASE + "model_revision: v2.0\n", tmp_path / "v.yaml")
    assert recipe.revision == "v2.0" and not recipe.warnings and not recipe.unknown
    model, _ = main_model(recipe, Options())
    assert model is not None and model.key == "org/m@v2.0"
    same = parse(V + BASE + "model_revision: v2.0\nrevision: v2.0\n", tmp_path / "v.yaml")
    assert same.revision == "v2.0"


def test_revision_and_model_revision_that_disagree_are_an_error_naming_both(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match=r"v.yaml: 'revision' \(main\) and 'model_revision' \(v2.0\) name "
                                          r"different revisions") as caught:
        parse(V + BASE + "revision: main\nmodel_revision: v2.0\n", tmp_path / "v.yaml")
    assert caught.value.field == ("model_revision",) and caught.value.fix
