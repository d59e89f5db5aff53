"""`run-recipe bench`: vLLM's own load generator against what runs, results with their fingerprint, charts."""

