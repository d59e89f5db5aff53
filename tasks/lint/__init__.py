"""`run-recipe lint`: recipe rules, origin rules and the check by an image's own vLLM."""

