"""Test harness: a private dockerd (engine) and test images built from scratch (images)."""
