"""`run-recipe lint`: one fixture recipe per rule that must fire, with its line and message.

Fixtures live in tests/unit/fixtures/lint/; each is named after what is wrong with it.
The shipped catalogue must lint clean (exit 0) through the real entry point.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.lint import rules as lint
from tasks.cli import lint as lint_cli

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "lint"

# fixture -> [(line, severity, rule, message fragment)], exactly the findings expected.
EXPECTED: dict[str, list[tuple[int, str, str, str]]] = {
    "yaml-syntax.yaml": [(7, "error", "yaml", "YAML syntax error at line 7")],
    "schema-missing-command.yaml": [(1, "error", "schema", "missing required field 'command'")],
    "schema-missing-version.yaml": [(1, "error", "schema", "missing required field 'recipe_version': add the line "
                                                          '`recipe_version: "1"`')],
    "schema-not-mapping.yaml": [(1, "error", "schema", "expected a mapping of fields")],
    "schema-bad-type.yaml": [(4, "error", "schema", "field 'cluster_only' must be true or false")],
    "schema-bad-default.yaml": [(6, "error", "schema", "defaults.max_model_len must be a single value")],
    "unknown-key.yaml": [(4, "warning", "unknown-key", "unknown field 'defualts' is ignored")],
    "duplicate-key.yaml": [(6, "error", "duplicate-key", "'defaults.port' is given twice (first on line 5)")],
    "placeholder-missing.yaml": [(9, "error", "placeholder", "placeholder '{max_model_len}' has no value in defaults")],
    "placeholder-stray-brace.yaml": [(9, "error", "placeholder", "is not a placeholder name")],
    "unused-default.yaml": [(6, "warning", "unused-default", "default 'max_model_len' is not used by the command")],
    "solo-only-tp2.yaml": [(11, "error", "parallelism", "solo_only, but the defaults ask for tp 2 = 2 GPUs")],
    "solo-hardcoded-tp.yaml": [(9, "error", "parallelism", "a solo run of this recipe asks vLLM for tp 2 = 2 GPUs")],
    "solo-pipeline-default.yaml": [(12, "error", "parallelism", "asks vLLM for tp 1 * pp 2 = 2 GPUs")],
    "cluster-only-tp1.yaml": [(4, "warning", "parallelism", "cluster_only, but the command asks for one GPU")],
    "4x/tp2-in-4x.yaml": [(11, "warning", "parallelism", "sits in 4x/ (for 4 nodes) but asks for tp 2 = 2 GPUs")],
    "mod-missing.yaml": [(6, "error", "mod", "mod 'mods/no-such-mod': "),
                         (7, "error", "mod", "no-run-sh' has no run.sh")],
    "build-arg-unknown.yaml": [(6, "error", "build-arg", "unknown build flag '--pre-tf5'")],
    "build-arg-cpu-conflict.yaml": [(7, "error", "build-arg", "'--pre-tf' cannot be combined with --cpu")],
    "model-id-bad.yaml": [(3, "error", "model-id", "model 'just-a-name' is not a HuggingFace repo id (org/name)")],
    "model-id-draft-bad.yaml": [(9, "error", "model-id", "--speculative-config model names 'org/draft--model'"),
                                (10, "error", "model-id", "--tokenizer names 'tokenizer-without-org'")],
    "model-id-bad-json.yaml": [(7, "error", "model-id", "--speculative-config is not valid JSON")],
    "model-id-mismatch.yaml": [(5, "warning", "model-id", "the command serves 'org/other-model' but model is 'org/model'")],
    "duplicate-flag.yaml": [(13, "error", "duplicate-flag", "'--tensor-parallel-size' repeats '-tp'"),
                            (14, "error", "duplicate-flag", "'--max-model-len' repeats '--max_model_len'"),
                            (17, "error", "duplicate-flag",
                             "'--no-enable-prefix-caching' contradicts '--enable-prefix-caching'")],
    "env-name-bad.yaml": [(6, "error", "env-name", "env: '1BAD' is not a valid environment variable name"),
                          (7, "error", "env-name", "env: 'ALSO-BAD' is not a valid environment variable name")],
    "bash-syntax.yaml": [(8, "error", "bash-syntax", "launch script fails `bash -n`: syntax error near unexpected token")],
    "executor-mp-cluster.yaml": [(12, "warning", "executor", "--distributed-executor-backend mp is never used")],
    "executor-solo-only.yaml": [(10, "warning", "executor",
                                 "solo_only, but the command sets --distributed-executor-backend ray")],
    "recipe-version-unknown.yaml": [(4, "warning", "recipe-version", "recipe_version '2' is not one this tool knows")],
    "clean.yaml": [],
}


def test_every_fixture_has_expectations() -> None:
    found = {p.relative_to(FIXTURES).as_posix() for p in FIXTURES.rglob("*.yaml")}
    assert found == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_findings(name: str) -> None:
    findings = lint.lint_file(FIXTURES / name, name, recipes_dir=ROOT / "recipes")
    got = [(f.line, f.severity, f.rule) for f in findings]
    assert got == [(line, sev, rule) for line, sev, rule, _ in EXPECTED[name]], [f.format() for f in findings]
    for finding, (_, _, _, fragment) in zip(findings, EXPECTED[name]):
        assert fragment in finding.message, finding.format()
        assert finding.fix, f"{finding.format()}: every finding says how to fix it"


@pytest.mark.parametrize("rule", ["yaml", "schema", "unknown-key", "duplicate-key", "placeholder",
                                  "unused-default", "parallelism", "mod", "build-arg", "model-id",
                                  "duplicate-flag", "env-name", "bash-syntax", "executor", "recipe-version"])
def test_each_rule_has_a_failing_fixture(rule: str) -> None:
    assert any(r == rule for exp in EXPECTED.values() for _, _, r, _ in exp)


def test_text_output_line_format(capsys: pytest.CaptureFixture[str]) -> None:
    code = lint_cli.main([str(FIXTURES / "duplicate-flag.yaml"), str(FIXTURES / "unknown-key.yaml")])
    out = capsys.readouterr().out.splitlines()
    assert code == 1
    assert len(out) == 5
    line_re = re.compile(r"^(?P<path>\S+):(?P<line>\d+): (?P<sev>error|warning): (?P<msg>.+) \(fix: (?P<fix>.+)\)$")
    for text in out[:-1]:
        assert line_re.match(text), text
    assert out[0].endswith("duplicate-flag.yaml:13: error: '--tensor-parallel-size' repeats '-tp' in the command; "
                           "vLLM keeps only the last value (fix: keep one of them)")
    assert out[-1] == "2 recipes checked: 3 errors, 1 warning"


def test_warnings_alone_exit_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert lint_cli.main([str(FIXTURES / "unknown-key.yaml"), str(FIXTURES / "clean.yaml")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "2 recipes checked: 0 errors, 1 warning"


def test_json_shape(capsys: pytest.CaptureFixture[str]) -> None:
    code = lint_cli.main([str(FIXTURES / "env-name-bad.yaml"), str(FIXTURES / "clean.yaml"), "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert code == 1
    assert isinstance(rows, list) and len(rows) == 2
    for row in rows:
        assert set(row) == {"file", "line", "severity", "rule", "message", "fix"}
        assert isinstance(row["line"], int) and row["severity"] in ("error", "warning")
    assert [(r["line"], r["rule"]) for r in rows] == [(6, "env-name"), (7, "env-name")]
    assert rows[0]["file"].endswith("env-name-bad.yaml")


def test_folder_and_missing_path(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.yml").write_text((FIXTURES / "clean.yaml").read_text())
    (tmp_path / "b.yaml").write_bytes(b"\xff\xfe not utf-8")
    code = lint_cli.main([str(tmp_path), str(tmp_path / "absent.yaml"), "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert code == 1
    assert [(Path(r["file"]).name, r["rule"]) for r in rows] == [("b.yaml", "yaml"), ("absent.yaml", "yaml")]
    assert "not UTF-8" in rows[0]["message"] and "no such file" in rows[1]["message"]


@pytest.mark.parametrize("text", ["", "[", "- a\n- b\n", "recipe_version: '1'\nname: x\ncommand: 5\ncontainer: [1]\n",
                                  "recipe_version: '1'\nname: x\ncontainer: c\ncommand: \"vllm serve 'a/b\"\n",
                                  "recipe_version: '1'\nname: x\ncontainer: c\ncommand: vllm serve a/b {\n",
                                  "? [a]\n: b\nname: x\n", "a: &a [*a]\n"])
def test_never_a_traceback(text: str, tmp_path: Path) -> None:
    path = tmp_path / "odd.yaml"
    path.write_text(text)
    findings = lint.lint_file(path)
    assert findings and all(f.severity == "error" for f in findings)


def test_shipped_catalogue_lints_clean() -> None:
    env = {**os.environ, "RUNRECIPE_HOME": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "tasks", "lint"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"^\d+ recipes checked: 0 errors, \d+ warnings?$", proc.stdout, re.M), proc.stdout
    assert "Traceback" not in proc.stderr
    count = len(list((ROOT / "recipes").rglob("*.yaml")))
    assert f"{count} recipes checked" in proc.stdout


def test_catalogue_json_via_cli() -> None:
    env = {**os.environ, "RUNRECIPE_HOME": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "tasks", "lint", "--json", "recipes"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    rows = json.loads(proc.stdout)
    assert all(r["severity"] == "warning" for r in rows), rows


def test_lint_help_shows_the_vllm_check_too() -> None:
    """--vllm and --venv were dispatched before argparse, so `lint --help` never showed them."""
    proc = subprocess.run([sys.executable, "-m", "tasks", "lint", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "--vllm [IMAGE]" in proc.stdout and "--venv PATH" in proc.stdout, proc.stdout
