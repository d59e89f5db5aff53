"""Stacks: several recipes placed on nodes behind one gateway, with a memory budget per node."""

