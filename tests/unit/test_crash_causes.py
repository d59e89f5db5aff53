"""The crash-cause table against log lines written from vLLM's, PyTorch's, NCCL's, huggingface_hub's
and uvicorn's public error messages (the text those projects print, with this run's numbers)."""
from __future__ import annotations

from pathlib import Path

import pytest

from tasks.ops import crash_causes

LINES = [
    ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of "
     "79.19 GiB of which 1.06 GiB is free.", "out-of-memory"),
    ("torch.cuda.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 MiB", "out-of-memory"),
    ("ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when "
     "initializing the engine.", "out-of-memory"),
    ("ValueError: Free memory on device (39.2/119.7 GiB) on startup is less than desired GPU memory utilization "
     "(0.9, 107.7 GiB). Decrease GPU memory utilization or reduce GPU memory used by other processes.",
     "out-of-memory"),
    ("RuntimeError: CUDA error: out of memory", "out-of-memory"),
    ("RuntimeError: CUDA error: an illegal memory access was encountered", "cuda"),
    ("RuntimeError: The NVIDIA driver on your system is too old (found version 12020). CUDA driver version "
     "is insufficient for CUDA runtime version", "cuda"),
    ("RuntimeError: No CUDA GPUs are available", "cuda"),
    ("torch.distributed.DistBackendError: NCCL error in: ../torch/csrc/distributed/c10d/NCCLUtils.hpp:317, "
     "unhandled system error (run with NCCL_DEBUG=INFO for details), NCCL version 2.21.5", "nccl"),
    ("ncclUnhandledCudaError: Call to CUDA function failed.", "nccl"),
    ("ERROR:    [Errno 98] error while attempting to bind on address ('0.0.0.0', 8000): address already in use",
     "port-in-use"),
    ("OSError: [Errno 98] Address already in use", "port-in-use"),
    ("vllm serve: error: unrecognized arguments: --tensor-paralel-size 2", "bad-argument"),
    ("vllm serve: error: argument --tensor-parallel-size/-tp: invalid int value: 'two'", "bad-argument"),
    ("huggingface_hub.errors.LocalEntryNotFoundError: Cannot find the requested files in the disk cache and "
     "outgoing traffic has been disabled. To enable hf.co look-ups and downloads online, set 'local_files_only' "
     "to False.", "weights"),
    ("OSError: cyankiwi/GLM-4.7-Flash-AWQ-4bit does not appear to have a file named config.json.", "weights"),
    ("RuntimeError: Cannot find any model weights with `/models/glm`", "weights"),
    ("huggingface_hub.errors.RepositoryNotFoundError: 404 Client Error. Repository Not Found for url", "weights"),
]


@pytest.mark.parametrize("line,name", LINES)
def test_each_public_error_line_reads_as_its_cause(line: str, name: str) -> None:
    tail = f"INFO 12-01 05:00:00 [api_server.py:1] vLLM API server version 0.11.0\nTraceback (most recent call last):\n{line}"
    cause, shown = crash_causes.read_cause(tail)
    assert cause.name == name and shown == line.strip()


LOGS = Path(__file__).parent / "fixtures" / "vllm-logs"
ROOTS = [  # fixture, cause, the line shown: vLLM's header gone, the generic EngineDeadError never
    ("cpu-attention", "cpu-attention", "RuntimeError: Unsupported CPU attention configuration: head_dim=16 isa=2 "
                                       "kv_cache_idx=0"),
    ("no-compiler", "no-compiler", "torch._inductor.exc.InductorError: InvalidCxxCompiler: No working C++ compiler "
                                   "found in torch._inductor.config.cpp.cxx: (None, 'g++')"),
    ("cpu-ray", "cpu-ray", "ValueError: current platform cpu does not support ray."),
    ("libnuma", "libnuma", "Failed to import from vllm._C with ImportError('libnuma.so.1: cannot open shared object "
                           "file: No such file or directory')"),
    ("no-python-headers", "no-python-headers", "/tmp/torchinductor_root/wa/cwamtpwdcktm3x.main.cpp:32:10: fatal "
                                               "error: Python.h: No such file or directory"),
    ("shm-too-small", "shm-too-small", "RuntimeError: Insufficient space in /dev/shm for shared-memory allocation: 160 "
                                     "MiB required, 64 MiB free. Increase /dev/shm (e.g. --shm-size or --ipc=host)."),
    ("oom-then-nccl", "out-of-memory", "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. "
                                       "GPU 1 has a total capacity of 79.19 GiB of which 1.06 GiB is free."),
    ("engine-dead-only", "engine-dead", "AsyncLLM output_handler failed."),
]


@pytest.mark.parametrize("fixture,name,line", ROOTS)
def test_the_root_cause_of_a_real_engine_death_is_read_not_its_last_line(fixture: str, name: str, line: str) -> None:
    """Known rules first (an error line, then a warning), then the first error-looking line, then vLLM's
    generic lines; the earliest line of the best kind wins: what follows the first error is its echo."""
    cause, shown = crash_causes.read_cause((LOGS / f"{fixture}.log").read_text())
    assert (cause.name, shown) == (name, line)


def test_the_rule_texts_say_what_to_do_on_a_cpu_machine() -> None:
    def fix(fixture: str) -> str:
        return crash_causes.one_line((LOGS / f"{fixture}.log").read_text()).split("; fix: ", 1)[1]

    assert "head_dim" in fix("cpu-attention") and "64 or 128" in fix("cpu-attention")
    assert "install g++ in the image" in fix("no-compiler") and "docker/Dockerfile.cpu" in fix("no-compiler")
    assert "without --ray" in fix("cpu-ray") and "native multi-node" in fix("cpu-ray")
    assert "install libnuma1" in fix("libnuma")


def test_the_first_error_wins_over_its_echoes_and_quiet_lines_never_count() -> None:
    first, echo = ("RuntimeError: CUDA error: an illegal memory access was encountered",
                   "OSError: [Errno 98] Address already in use")
    assert crash_causes.read_cause(f"{first}\n{echo}")[0].name == "cuda"
    # a traceback's frames and code are not its exception; INFO and DEBUG lines are never a cause
    assert crash_causes.read_cause("Traceback (most recent call last):\n"
                                   '  File "/x/serve.py", line 3, in main\n'
                                   "    raise ValueError(msg)\n"
                                   "ValueError: bad max_model_len") == (crash_causes.FIRST_ERROR,
                                                                        "ValueError: bad max_model_len")
    assert crash_causes.read_cause("(APIServer pid=1) INFO 12-07 10:00:01 [x.py:1] retrying after CUDA error\n"
                                   "DEBUG 12-07 10:00:01 [x.py:2] KeyError: 'ignored'") is None
    # a warning counts only through a rule; an unknown one is not an error
    assert crash_causes.read_cause("WARNING 12-07 10:00:01 [x.py:1] ValueError: deprecated, ignored") is None


def test_one_line_names_cause_line_and_fix() -> None:
    text = crash_causes.one_line("x\nvllm serve: error: unrecognized arguments: --foo\n")
    assert text.startswith("cause: bad argument (vllm serve: error: unrecognized arguments: --foo); fix: ")


def test_unrecognised_and_sigkill() -> None:
    assert crash_causes.read_cause("INFO all fine\nshutting down") is None
    assert "out-of-memory killer" in crash_causes.one_line("", exit_code=137)
    # SIGKILL comes from outside: an unknown error line does not explain it, a known one may
    assert "out-of-memory killer" in crash_causes.one_line("KeyError: 'x'", exit_code=137)
    assert "cause: port in use" in crash_causes.one_line("OSError: [Errno 98] Address already in use", exit_code=137)


def test_a_dead_engine_reads_as_such_unless_a_line_says_why() -> None:
    dead = "ERROR 12-01 06:00:00 [core.py:586] EngineCore encountered a fatal error.\n" \
           "vllm.v1.engine.exceptions.EngineDeadError: EngineCore encountered an issue. See stack trace (above) for the root cause."
    assert crash_causes.read_cause(dead)[0].name == "engine-dead"
    assert crash_causes.read_cause("torch.OutOfMemoryError: CUDA out of memory.\n" + dead)[0].name == "out-of-memory"
