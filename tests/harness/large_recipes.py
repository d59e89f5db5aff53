"""Large recipes that expose super-linear work: shared by tests/faults/test_large_recipes.py and
bench/large_recipes.py, so the test and the bench time the same documents."""
from __future__ import annotations

FLAGS = 20_000            # lint: `--max-num-seqs N` lines, each a duplicate-flag finding
PLACEHOLDERS = 300_000    # dry run: a 1 MB recipe


def repeated_flags(flags: int, option: str = "--max-num-seqs {i}") -> str:
    """A recipe whose command repeats one option `flags` times, one per line (lint reports each repeat)."""
    lines = "".join(f"    {option.format(i=i)} \\\n" for i in range(flags))
    return ("name: many flags\ncontainer: rr-bench\ndefaults: {port: 8000}\ncommand: |\n"
            f"  vllm serve org/m \\\n{lines}    --port {{port}}\nrecipe_version: '1'\n")  # last: lines as counted


def placeholders(count: int) -> str:
    """About 1 MB at 300,000 placeholders: words of six, bare, in '...' and in "..." (every quotable context)."""
    word = "{p}" * 6
    words = (word, word, f"'{word}'", f'"{word}"')
    command = "vllm serve org/m --x " + " ".join(words[i % 4] for i in range(count // 6))
    return f"recipe_version: '1'\nname: many placeholders\ncontainer: rr-bench\ndefaults: {{p: a b}}\ncommand: {command}\n"
