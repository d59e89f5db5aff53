"""run-recipe watch | install-service | uninstall-service: keep a recipe serving, and start it at boot.

Part of the command line (it prints). The run's own words (recipe, flags, `-- ...`) follow the
command, exactly as for `run-recipe RECIPE ...`, so the watcher and the service converge the same
plan; the watcher's own flags may stand anywhere before `--`.
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

from ..flagtypes import seconds


def main(command: str, args: list[str], plan_of: Callable[[list[str]], Any]) -> int:
    """`plan_of` makes the plan of the run's own words (the CLI's parser: this module never imports the CLI)."""
    own, extra = (args[:args.index("--")], args[args.index("--"):]) if "--" in args else (args, [])
    p = parser(command)
    ns, rest = p.parse_known_args(own)
    run_args = [*rest, *extra]
    if command == "uninstall-service":
        if rest:
            p.error(f"unrecognized arguments: {' '.join(rest)}")
        return _uninstall(ns)
    plan = plan_of(run_args)
    if command == "watch":
        return _watch(ns, plan, run_args)
    return _install(ns, plan, run_args)


def parser(command: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"run-recipe {command}", allow_abbrev=False, usage=f"run-recipe {command} RECIPE [RUN OPTIONS] "
                                "[-- EXTRA_VLLM_ARGS...]" if command != "uninstall-service" else None)
    if command == "watch":
        p.add_argument("--interval", type=seconds, default=3.0, help="seconds between checks (default 3)")
        p.add_argument("--backoff", type=seconds, default=5.0,
                       help="seconds before retrying a failed restart; doubles each time (default 5, at most 300)")
        p.add_argument("--max-restarts", type=int, default=5, metavar="K",
                       help="stop after K failed restarts within --within minutes (default 5)")
        p.add_argument("--within", type=seconds, default=10.0, metavar="MINUTES", help="the crash-loop window (default 10)")
        p.add_argument("--token-every", type=seconds, default=30.0, metavar="S",
                       help="seconds between streamed-token probes of the head (default 30)")
        p.add_argument("--token-wait", type=seconds, default=30.0, metavar="S",
                       help="seconds a probe waits for its first token; two silent probes re-form (default 30)")
        return p
    if command == "uninstall-service":
        p.add_argument("recipe", help="the recipe whose unit to remove")
    p.add_argument("--user", dest="user", action="store_true", default=None,
                   help="a user unit (~/.config/systemd/user; default when not root)")
    p.add_argument("--system", dest="user", action="store_false", help="a system unit (/etc/systemd/system; default as root)")
    p.add_argument("--unit-dir", type=Path, metavar="DIR", help="write the unit here instead")
    if command == "install-service":
        p.add_argument("--enable", action="store_true", help="also systemctl daemon-reload and enable --now")
    return p


def _watch(ns: argparse.Namespace, plan: Any, run_args: list[str]) -> int:
    from ..connect import Local
    from ..serve import watch
    from ..serve.recipe_run import RecipeRun

    if plan.mode == "cluster":
        from ..graph.doit_tasks import fleet_for

        runners = fleet_for(plan).runners
    else:
        runners = [Local()]
    policy = watch.Policy(interval=ns.interval, backoff=ns.backoff, max_failures=max(1, ns.max_restarts),
                          window=ns.within * 60)
    log = watch.logger(lambda line: print(line, file=sys.stderr, flush=True))
    return watch.watch([RecipeRun(plan, run_args, runners, ns.token_every, ns.token_wait)], policy, log)


def _is_root() -> bool:
    import os

    return os.geteuid() == 0


def _install(ns: argparse.Namespace, plan: Any, run_args: list[str]) -> int:
    from ..serve import service

    from ..container_flags import secret_env

    secrets = [service.Secret(v, f"the value of -e {k}", k) for k, v in secret_env(plan.options.docker).items()]
    secrets.append(service.Secret(plan.api_key, "the server's API key (vLLM reads VLLM_API_KEY when its command "
                                                "has no --api-key)", "VLLM_API_KEY"))
    service.check_env_file()
    user = (not _is_root()) if ns.user is None else ns.user
    unit = service.render_unit(plan.recipe.id, run_args, user=user, directory=ns.unit_dir, secrets=secrets)
    service.write(unit)
    problem = service.verify(unit)
    if problem:
        unit.path.unlink()
        print(f"Error: systemd-analyze verify refused {unit.path} (removed):\n{problem}", file=sys.stderr)
        return 1
    print(f"wrote {unit.path}")
    if ns.enable:
        for argv in (service.systemctl(unit, "daemon-reload"), service.systemctl(unit, "enable", "--now", unit.name)):
            if subprocess.call(argv):
                print(f"Error: `{shlex.join(argv)}` failed", file=sys.stderr)
                return 1
        print(f"enabled and started {unit.name}")
    else:
        print(f"start it now and at every boot: {shlex.join(service.systemctl(unit, 'daemon-reload'))} && "
              f"{shlex.join(service.systemctl(unit, 'enable', '--now', unit.name))}")
    return 0


def _uninstall(ns: argparse.Namespace) -> int:
    import shutil

    from ..serve import service
    from ..serve.lifecycle import id_of

    user = (not _is_root()) if ns.user is None else ns.user
    name = service.unit_name(id_of(ns.recipe))
    path = (ns.unit_dir or service.unit_dir(user)) / name
    if not path.exists():
        print(f"Error: no unit {path} (see --user / --system / --unit-dir)", file=sys.stderr)
        return 1
    unit = service.Unit(name, path, "", user)
    if shutil.which("systemctl") and ns.unit_dir is None:
        subprocess.call(service.systemctl(unit, "disable", "--now", name))  # not loaded: says so, no harm
    path.unlink()
    if shutil.which("systemctl") and ns.unit_dir is None:
        subprocess.call(service.systemctl(unit, "daemon-reload"))
    print(f"removed {path}")
    return 0

