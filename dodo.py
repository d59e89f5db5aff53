"""runrecipe's task graph for doit.

    doit list                         every recipe's tasks (build:, download:, image:, weights:, mods:, check:, launch:)
    doit run recipe=NAME [key=value]  build, download, copy, apply mods and launch NAME; key=value sets a parameter
    doit run stack=NAME               every entry of stacks/NAME.yaml (or a path), in start order, then its gateway
    doit info launch:NAME             why a task would run
    doit forget build:IMAGE           make doit forget a task's recorded result
    doit lint                         check the catalogue

The run is held by tasks.graph.session (the lock, the cluster preflight), as run-recipe's are; the tasks come
from tasks.cli.loader (doit's variables into plans) and tasks.graph.doit_tasks, the generators the run-recipe CLI uses too.
"""
import sys

from tasks.cli import loader
from tasks.graph import session
from tasks.cli.events import install_for_environment
from tasks.errors import RunRecipeError
from tasks.masking import scrub

try:
    install_for_environment()  # the tasks' events rendered as run-recipe renders them
    globals().update(session.for_doit(sys.argv[1:], loader.doit_namespace))
except RunRecipeError as exc:  # a bad recipe or node list is a message, not a traceback
    print(f"Error: {scrub(str(exc))}", file=sys.stderr)
    raise SystemExit(exc.exit_code) from None
