"""A cluster's shape: each node's role, rank and environment, the preflight table, and finding nodes."""

