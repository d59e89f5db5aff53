"""The core imports only the core (issue #25 item 5; ARCHITECTURE.md: "Core imports no op, fact or connector
module"): what a run is, as data, can be read, planned and linted without any module that touches a node.

Core: the settings and config a run reads, the recipe and its command, the plan, and the specs (build
specs and flags, mods and PR descriptions, HF names, interface names), with the small helpers they stand on.
lint reads recipes and specs only, so it counts as core here too."""
from __future__ import annotations

from tests.unit.test_import_loops import imports

CORE = {
    # settings and config
    "errors", "masking", "settings", "config", "nodes", "flagtypes", "container_flags", "units", "memo",
    # the recipe and its command
    "recipe", "yaml_positions", "shellwords", "render", "vllm_args",
    # the plan and the specs it is made of
    "plan", "build_spec", "mod_spec", "mod_sources", "hf_names", "interfaces",
    # lint reads the same
    "lint", "origin_rules",
}


def test_core_modules_exist() -> None:
    assert CORE <= set(imports()), f"renamed or gone: {sorted(CORE - set(imports()))}"


def test_core_imports_only_core() -> None:
    edges = imports()
    outside = {name: sorted(edges[name] - CORE) for name in sorted(CORE) if edges[name] - CORE}
    assert outside == {}, "core modules importing an operation, fact or connector module: move the data they need into a spec"
