"""python -m tasks: the run-recipe CLI without installing the console script."""
import sys

from .cli.main import main

sys.exit(main())

