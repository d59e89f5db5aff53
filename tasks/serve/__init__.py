"""Keeping recipes serving: run records, the watcher, systemd units, status and stop."""

