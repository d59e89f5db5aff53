#!/usr/bin/env bash
# Seed-compatible entry point: make (or reuse) the project's venv, install the project
# into it when pyproject.toml changed, then hand every argument to the run-recipe CLI.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${RUNRECIPE_VENV:-$here/.venv}"
stamp="$venv/.runrecipe-installed"
want="$(sha256sum "$here/pyproject.toml" | cut -d' ' -f1)"

if [ ! -x "$venv/bin/python" ]; then
  echo "run-recipe: creating $venv (first run)" >&2
  python3 -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "run-recipe: installing runrecipe into $venv" >&2
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$here" >&2
  echo "$want" > "$stamp"
fi
exec "$venv/bin/run-recipe" "$@"
