"""Why a vLLM server died, read from its last log lines: a table of patterns -> cause + fix.

The rules are data (one row each, first match wins, most specific first) so a new failure is one
row and a test line, not a new branch of code. Patterns are written from the error messages vLLM,
PyTorch, NCCL, huggingface_hub and uvicorn print; they match anywhere in a line, ignoring case.
"""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Cause:
    """One kind of failure: what it is (one line) and what to do about it."""

    name: str   # short key
    what: str
    fix: str


OUT_OF_MEMORY = Cause("out-of-memory", "out of memory",
                      "lower --gpu-memory-utilization or --max-model-len, or free the memory other processes "
                      "hold (`run-recipe status`, nvidia-smi)")
CUDA = Cause("cuda", "CUDA error",
             "check the driver and the GPU (nvidia-smi); the image's CUDA must match the driver")
NCCL = Cause("nccl", "NCCL error",
             "check the nodes reach each other on --eth-if / --ib-if (ETH_IF, IB_IF) and run the same image")
WEIGHTS = Cause("weights", "missing weights",
                "download them first: run-recipe RECIPE --setup (or check the model name and revision)")
BAD_ARGUMENT = Cause("bad-argument", "bad argument",
                     "fix the flag in the recipe's command or after `--`; `vllm serve --help` lists them")
PORT_IN_USE = Cause("port-in-use", "port in use",
                    "stop what listens there (`ss -ltnp`) or choose another --port")
ENGINE_DEAD = Cause("engine-dead", "vLLM's engine died",
                    "the lines before it say why; `run-recipe watch` restarts the group")

# (pattern, cause): first match wins, so an OOM reported as a CUDA error is read as out of memory.
RULES: tuple[tuple[str, Cause], ...] = (
    (r"OutOfMemoryError|CUDA out of memory|CUDA error: out of memory", OUT_OF_MEMORY),
    (r"No available memory for the cache blocks", OUT_OF_MEMORY),
    (r"Free memory on device .* is less than desired GPU memory utilization", OUT_OF_MEMORY),
    (r"cudaErrorMemoryAllocation|Cannot allocate memory", OUT_OF_MEMORY),
    (r"NCCL error|DistBackendError|nccl(Unhandled|System|Internal|Invalid|Remote)\w*Error", NCCL),
    (r"CUDA error|CUDA driver version is insufficient|No CUDA GPUs are available|cudaError\w+", CUDA),
    (r"Address already in use|\[Errno 98\]", PORT_IN_USE),
    (r"error: unrecognized arguments|error: argument [-\w/]+: |error: the following arguments are required",
     BAD_ARGUMENT),
    (r"LocalEntryNotFoundError|RepositoryNotFoundError|RevisionNotFoundError|EntryNotFoundError", WEIGHTS),
    (r"does not appear to have a file named|Cannot find any model weights|couldn't connect to "
     r"'https://huggingface\.co'|Invalid repository ID or local directory", WEIGHTS),
    (r"No such file or directory: .*(config\.json|\.safetensors)", WEIGHTS),
)
# read only when no rule above matches any line: they say that it died, not why
FALLBACK_RULES: tuple[tuple[str, Cause], ...] = (
    (r"EngineDeadError|EngineCore encountered a fatal error", ENGINE_DEAD),
)
_TIERS = tuple(tuple((re.compile(pattern, re.IGNORECASE), cause) for pattern, cause in rules)
               for rules in (RULES, FALLBACK_RULES))


def read_cause(log_tail: str) -> tuple[Cause, str] | None:
    """The cause and the line that shows it, searching from the last line up (the last error is the
    one that stopped the server; earlier ones may have been retried), or None when no rule matches."""
    for tier in _TIERS:
        for line in reversed(log_tail.splitlines()):
            for pattern, cause in tier:
                if pattern.search(line):
                    return cause, line.strip()
    return None


def one_line(log_tail: str, exit_code: int | None = None) -> str:
    """`cause: <what> (<the line>); fix: <what to do>` for messages; a kill by SIGKILL (137) with no
    matching line is most often the kernel's OOM killer."""
    found = read_cause(log_tail)
    if found:
        cause, line = found
        return f"cause: {cause.what} ({line[:200]}); fix: {cause.fix}"
    if exit_code == 137:
        return f"cause: killed (exit 137, often the kernel's out-of-memory killer); fix: {OUT_OF_MEMORY.fix}"
    return "cause: not recognised from the log (see the lines below)"

