"""Why a vLLM server died, read from its log: a table of patterns -> cause + fix, then the first error.

The root cause is the first error of the failing process, not the last line: vLLM ends every engine
death with the same generic `EngineDeadError` (or "Engine core initialization failed"), and the
errors after the first are its consequences (other ranks losing their peer, the API server losing
its engine). So a line is ranked, and the earliest line of the best rank wins:

0. a known rule (one row each, most specific first) on an error line;
1. a known rule on a WARNING line (vLLM only warns when `vllm._C` fails to import, e.g. no libnuma,
   and fails obscurely later); a warning that was retried (a hub look-up) loses to any error line;
2. the first line that looks like an error and is not one of vLLM's generic ones;
3. a generic line (the engine died, a worker died): it says that, not why.

DEBUG and INFO lines never count. Rules are data, so a new failure is one row and a test line.
Patterns are written from the messages vLLM, PyTorch, NCCL, huggingface_hub and uvicorn print;
they match anywhere in a line, ignoring case.
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
CPU_ATTENTION = Cause("cpu-attention", "vLLM's CPU attention refuses the model's head size",
                      "the CPU build's attention kernels do not support this model's head_dim: serve a model "
                      "whose head_dim they support (e.g. 64 or 128)")
NO_COMPILER = Cause("no-compiler", "no C++ compiler in the image",
                    "vLLM's CPU path compiles with torch.compile (tensor parallelism does even with "
                    "--enforce-eager): install g++ in the image (docker/Dockerfile.cpu does)")
NO_PYTHON_HEADERS = Cause("no-python-headers", "no Python headers in the image",
                          "torch.compile's C++ (tensor parallelism on the CPU build) includes Python.h: install "
                          "python3-dev in the image (docker/Dockerfile.cpu does)")
SHM_TOO_SMALL = Cause("shm-too-small", "/dev/shm too small for vLLM's shared memory",
                      "run with --ipc=host (runrecipe's default) or a larger --shm-size in the recipe's "
                      "container flags")
CPU_RAY = Cause("cpu-ray", "the CPU build of vLLM cannot use Ray",
                "run without --ray (native multi-node, the default) and without "
                "`--distributed-executor-backend ray` in the command")
NO_LIBNUMA = Cause("libnuma", "libnuma missing in the image",
                   "vLLM's CPU kernels need libnuma.so.1: install libnuma1 in the image "
                   "(docker/Dockerfile.cpu does)")
FIRST_ERROR = Cause("first-error", "the first error the server logged",
                    "no rule knows it: the log lines around it say more")
ENGINE_DEAD = Cause("engine-dead", "vLLM's engine died",
                    "no line of the log says why; read the whole log (a failed launch keeps it)")

# (pattern, cause): within a line the first match wins, so an OOM reported as a CUDA error is read as
# out of memory.
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
    (r"Unsupported CPU attention configuration", CPU_ATTENTION),
    (r"InvalidCxxCompiler|No working C\+\+ compiler", NO_COMPILER),
    (r"Python\.h: No such file or directory", NO_PYTHON_HEADERS),
    (r"Insufficient space in /dev/shm", SHM_TOO_SMALL),
    (r"current platform cpu does not support ray", CPU_RAY),
    (r"libnuma\.so[.\d]*: cannot open shared object file", NO_LIBNUMA),
)
# vLLM's generic lines: they say that a process died (and announce the traceback), not why
GENERIC = (r"EngineDeadError|EngineCore encountered a fatal error|EngineCore failed to start|"
           r"Engine core initialization failed|WorkerProc (?:failed to start|hit an exception)|"
           r"Worker proc \S+ died unexpectedly|"
           r"output_handler failed|Exception in ASGI application")
# a line that looks like an error: a Python exception, an argparse error, a crash of the interpreter
ERROR_LOOKING = (r"^(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception)(?::|$)|: error: |^error: |"
                 r"^Fatal Python error|Segmentation fault|command not found$")
# the parts of a traceback that are not its exception
TRACEBACK = r"^Traceback \(most recent call last\)|^The above exception was|^During handling of the above"

# vLLM's header: `(EngineCore_DP0 pid=266) ERROR 12-07 10:00:03 [core.py:708] message`; the process tag and
# the file may be missing. uvicorn's `ERROR:    message` keeps its level in the line shown.
_TAG = re.compile(r"^\([^)]*\) ")
_VLLM_HEADER = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL)\s+\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?\s+"
                          r"(?:\[?[\w./-]+:\d+\]\s?)?")
_LEVEL_WORD = re.compile(r"^(DEBUG|INFO|WARNING|ERROR|CRITICAL):\s")
_QUIET = ("DEBUG", "INFO")
_RULES = tuple((re.compile(pattern, re.IGNORECASE), cause) for pattern, cause in RULES)
_GENERIC = re.compile(GENERIC, re.IGNORECASE)
_ERROR_LOOKING = re.compile(ERROR_LOOKING)
_TRACEBACK = re.compile(TRACEBACK)


def _parse(line: str) -> tuple[str, str]:
    """(level or "" when the line has none, the line as shown: without vLLM's process tag and header)."""
    shown = _TAG.sub("", line.rstrip(), count=1)
    header = _VLLM_HEADER.match(shown)
    if header:
        return header.group(1), shown[header.end():]
    word = _LEVEL_WORD.match(shown)
    return (word.group(1) if word else ""), shown


def _rank(level: str, shown: str) -> tuple[int, Cause] | None:
    """The rank (0 best) and cause of one line, None when it says nothing about why."""
    if level in _QUIET or not shown or shown[0].isspace():  # quiet, empty, or a traceback frame
        return None
    for pattern, cause in _RULES:
        if pattern.search(shown):
            return (1 if level == "WARNING" else 0), cause
    if level == "WARNING" or _TRACEBACK.search(shown):
        return None
    if _GENERIC.search(shown):
        return 3, ENGINE_DEAD
    if level in ("ERROR", "CRITICAL") or _ERROR_LOOKING.search(shown):
        return 2, FIRST_ERROR
    return None


def read_cause(log: str) -> tuple[Cause, str] | None:
    """The cause and the line that shows it (best rank, then earliest line), or None when no line says
    anything about why."""
    best: tuple[int, Cause, str] | None = None
    for line in log.splitlines():
        level, shown = _parse(line)
        found = _rank(level, shown)
        if found and (best is None or found[0] < best[0]):
            best = (found[0], found[1], shown.strip())
            if best[0] == 0:
                break
    return (best[1], best[2]) if best else None


def one_line(log: str, exit_code: int | None = None) -> str:
    """`cause: <what> (<the line>); fix: <what to do>` for messages; a kill by SIGKILL (137) that no
    known rule explains is most often the kernel's OOM killer."""
    found = read_cause(log)
    if found and not (exit_code == 137 and found[0] in (FIRST_ERROR, ENGINE_DEAD)):  # no rule: the kill says more
        cause, line = found
        return f"cause: {cause.what} ({line[:200]}); fix: {cause.fix}"
    if exit_code == 137:
        return f"cause: killed (exit 137, often the kernel's out-of-memory killer); fix: {OUT_OF_MEMORY.fix}"
    return "cause: not recognised from the log (see the lines below)"

