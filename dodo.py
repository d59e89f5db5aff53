"""runrecipe's task graph for doit.

    doit list                         every recipe's tasks (build:, mods:, launch:)
    doit run recipe=NAME [key=value]  build, apply mods and launch NAME; key=value sets a parameter
    doit info launch:NAME             why a task would run
    doit forget build:IMAGE           make doit forget a task's recorded result

The tasks come from tasks.graph, the generators the run-recipe CLI uses too.
"""
import sys

from tasks import state
from tasks.cli import doit_namespace

state.lock("doit " + " ".join(sys.argv[1:]))
globals().update(doit_namespace())
