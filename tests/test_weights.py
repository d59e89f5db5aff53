"""tasks/ops/weights.py against the local hub and the real huggingface_hub client (loopback only)."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.hub import LocalHub, fake_safetensors  # sets HF_ENDPOINT to loopback first

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tasks.facts import hub_cache as C
from tasks.errors import RenderError  # noqa: E402
from tasks import hf_names, vllm_args as V
from tasks.ops import weights as W

FILES = {
    "config.json": b'{"architectures": ["LlamaForCausalLM"], "hidden_size": 64}',
    "tokenizer.json": b'{"model": {"vocab": {}}}',
    "model-00001-of-00002.safetensors": fake_safetensors(100_000, seed=1),
    "model-00002-of-00002.safetensors": fake_safetensors(100_000, seed=2),
    "original/consolidated.pth": b"pickle-ish bytes vLLM does not need",
}


@pytest.fixture(autouse=True)
def _no_ambient_hf(monkeypatch):
    for k in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(k, raising=False)


@pytest.fixture
def hub():
    with LocalHub() as h:
        yield h


@pytest.fixture
def repo(hub):
    return hub.create_repo("org/model", FILES)


def dl(hub, cache, repo="org/model", commit=None, **kw):
    kw.setdefault("token", False)
    kw.setdefault("stream", io.StringIO())
    commit = commit or W.resolve_commit(repo, "main", endpoint=hub.endpoint, token=kw["token"], offline=False)
    return W.download(repo, commit, cache_dir=cache, endpoint=hub.endpoint, **kw)


def resolve_gets(hub) -> list[str]:
    return sorted(p.split("/resolve/", 1)[1].split("/", 1)[1] for m, p in hub.requests if m == "GET" and "/resolve/" in p)


def message_and_clean(exc_info) -> str:
    err = exc_info.value
    assert isinstance(err, W.WeightsError)
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__), "no chained traceback"
    return str(err)


# ----------------------------------------------------------------------------- command parsing
@pytest.mark.parametrize(
    "argv, refs",
    [
        (["vllm", "serve", "org/main", "--speculative-config", '{"model": "org/draft", "num_speculative_tokens": 3}'], ["org/draft"]),
        (["vllm", "serve", "org/main", '--speculative_config={"method": "eagle", "model": "yuhuili/EAGLE-8B"}'], ["yuhuili/EAGLE-8B"]),
        (["serve", "org/main", "--speculative_config.model", "org/d2"], ["org/d2"]),
        (["serve", "org/main", "--speculative-config.model=org/d3"], ["org/d3"]),
        (["serve", "org/main", "--tokenizer", "org/tok", "--tokenizer-mode", "auto"], ["org/tok"]),
        (["serve", "org/main", "--tokenizer=org/tok", "--speculative-model", "org/tok"], ["org/tok"]),
        (["serve", "org/main", "--tokenizer", "/models/tok", "--speculative-config", '{"model": "./draft"}'], []),
        (["serve", "org/main", "--speculative-config", '{"method": "ngram", "num_speculative_tokens": 4}'], []),
        (["serve", "org/main", "--max-model-len", "4096", "--trust-remote-code"], []),
    ],
)
def test_model_refs_in_command(argv, refs):
    assert V.model_refs(argv) == refs


def test_model_refs_bad_json_is_a_clear_error():
    with pytest.raises(RenderError, match="not valid JSON"):
        V.model_refs(["--speculative-config", "{model: org/x}"])


name_part = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,20}", fullmatch=True)


@settings(max_examples=60, deadline=None)
@given(org=name_part, name=name_part, eq=st.booleans(), flag=st.sampled_from(["--speculative-config", "--speculative_config"]))
def test_model_refs_any_repo_id_in_either_form(org, name, eq, flag):
    import json

    cfg = json.dumps({"model": f"{org}/{name}", "num_speculative_tokens": 2})
    argv = ["serve", "x/y", f"{flag}={cfg}"] if eq else ["serve", "x/y", flag, cfg]
    assert V.model_refs(argv) == ([] if hf_names.is_local_path(org) else [f"{org}/{name}"])


def test_is_local_path():
    assert hf_names.is_local_path("/models/llama") and hf_names.is_local_path("./m") and hf_names.is_local_path("../m")
    assert not hf_names.is_local_path("meta-llama/Llama-3.1-8B")


def test_hub_cache_dir_follows_hf_env():
    assert C.hub_cache_dir({"HF_HUB_CACHE": "/c", "HF_HOME": "/h"}) == Path("/c")
    assert C.hub_cache_dir({"HF_HOME": "/h"}) == Path("/h/hub")
    assert C.hub_cache_dir({"XDG_CACHE_HOME": "/x"}) == Path("/x/huggingface/hub")
    assert C.offline_from_env({"HF_HUB_OFFLINE": "1"}) and not C.offline_from_env({"HF_HUB_OFFLINE": "0"})


# ----------------------------------------------------------------------------- resolve
def test_resolve_commit_pin_is_free_branch_is_one_request(hub, repo, tmp_path):
    assert W.resolve_commit("org/model", repo, endpoint=hub.endpoint, offline=False) == repo
    assert hub.requests == []
    assert W.resolve_commit("org/model", "main", endpoint=hub.endpoint, token=False, offline=False) == repo
    assert hub.requests == [("GET", "/api/models/org/model/revision/main")]


def test_resolve_commit_offline_reads_refs(hub, repo, tmp_path):
    with pytest.raises(W.OfflineIncomplete) as err:
        W.resolve_commit("org/model", "main", offline=True, cache_dir=tmp_path)
    assert "HF_HUB_OFFLINE" in message_and_clean(err)
    dl(hub, tmp_path, revision="main")
    hub.requests.clear()
    assert W.resolve_commit("org/model", "main", offline=True, cache_dir=tmp_path) == repo
    assert hub.requests == []


def test_resolve_commit_errors(hub, repo, tmp_path):
    with pytest.raises(W.RepoNotFound) as err:
        W.resolve_commit("org/nope", "main", endpoint=hub.endpoint, token=False, offline=False)
    assert "org/nope" in message_and_clean(err) and "HF_TOKEN" in str(err.value)
    with pytest.raises(W.RevisionNotFound) as err:
        W.resolve_commit("org/model", "v9", endpoint=hub.endpoint, token=False, offline=False)
    assert "'v9'" in message_and_clean(err)


def test_unreachable_hub_is_a_clear_error(tmp_path):
    with pytest.raises(W.HubUnreachable) as err:
        W.resolve_commit("org/model", "main", endpoint="http://127.0.0.1:9", token=False, offline=False)
    assert "127.0.0.1:9" in message_and_clean(err)


# ----------------------------------------------------------------------------- gated
def test_gated_repo_message_and_the_token_never_shows(hub, tmp_path, monkeypatch):
    sha = hub.create_repo("org/gated", FILES, gated=True)
    for call in (
        lambda tok: W.resolve_commit("org/gated", "main", endpoint=hub.endpoint, token=tok, offline=False),
        lambda tok: dl(hub, tmp_path, repo="org/gated", commit=sha, token=tok),
    ):
        with pytest.raises(W.AccessDenied) as err:
            call(False)
        msg = message_and_clean(err)
        assert "accept the licence at https://huggingface.co/org/gated and set HF_TOKEN" in msg
        wrong = "hf_wrongtoken_" + "x" * 20
        with pytest.raises(W.AccessDenied) as err:
            call(wrong)
        assert wrong not in message_and_clean(err) and "licence" in str(err.value)
        monkeypatch.setenv("HF_TOKEN", wrong)  # picked up by the client when token=None
        with pytest.raises(W.AccessDenied) as err:
            call(None)
        assert wrong not in message_and_clean(err) and "HF_TOKEN has no access" in str(err.value)
        monkeypatch.delenv("HF_TOKEN")
    out = io.StringIO()
    s = dl(hub, tmp_path, repo="org/gated", commit=sha, token=hub.token, stream=out)
    assert s.files == len(FILES) and hub.token not in out.getvalue()
    assert C.snapshot_state(tmp_path, "org/gated", sha).complete


# ----------------------------------------------------------------------------- state + download
def test_snapshot_state_cold_then_complete_then_damaged(hub, repo, tmp_path):
    st0 = C.snapshot_state(tmp_path, "org/model", repo)
    assert not st0.complete and "listing" in st0.reason
    out = io.StringIO()
    s = dl(hub, tmp_path, revision="main", stream=out)
    assert (s.files, s.bytes, s.present) == (len(FILES), sum(map(len, FILES.values())), 0)
    assert out.getvalue().count("\n") == 1 and f"{len(FILES)} files" in out.getvalue()
    state = C.snapshot_state(tmp_path, "org/model", repo, revision="main")
    assert state.complete and state.files == len(FILES) and state.bytes == sum(map(len, FILES.values()))
    assert Path(s.path, "config.json").read_bytes() == FILES["config.json"]

    snap = Path(s.path)
    (snap / "tokenizer.json").unlink()
    blob = (snap / "model-00001-of-00002.safetensors").resolve()
    os.truncate(blob, 10)
    state = C.snapshot_state(tmp_path, "org/model", repo)
    assert not state.complete
    assert state.missing == ["tokenizer.json"] and state.wrong_size == ["model-00001-of-00002.safetensors"]
    hub.requests.clear()
    s = dl(hub, tmp_path, commit=repo)  # repairs both: the bad blob is refetched, the link to a good blob redone
    assert resolve_gets(hub) == ["model-00001-of-00002.safetensors"]
    assert (s.files, s.present) == (1, len(FILES) - 1)
    assert C.snapshot_state(tmp_path, "org/model", repo).complete
    assert C.verify_blobs(tmp_path, "org/model", repo) == []


def test_up_to_date_costs_one_request_and_zero_with_a_pin(hub, repo, tmp_path):
    dl(hub, tmp_path, revision="main")
    hub.requests.clear()
    commit = W.resolve_commit("org/model", "main", endpoint=hub.endpoint, token=False, offline=False)
    assert C.snapshot_state(tmp_path, "org/model", commit, revision="main").complete
    assert len(hub.requests) == 1
    hub.requests.clear()
    commit = W.resolve_commit("org/model", repo, endpoint=hub.endpoint, token=False, offline=False)
    assert C.snapshot_state(tmp_path, "org/model", commit).complete
    s = dl(hub, tmp_path, commit=commit)
    assert s.files == 0 and s.present == len(FILES)
    assert hub.requests == []


def test_snapshot_state_reads_no_weight_bytes(hub, repo, tmp_path):
    s = dl(hub, tmp_path)
    for p in Path(s.path).rglob("*"):
        if p.is_file():
            os.chmod(p.resolve(), 0)  # unreadable for a non-root reader; stat still works
    import builtins

    real_open = builtins.open
    opened = []
    builtins.open = lambda f, *a, **k: (opened.append(str(f)), real_open(f, *a, **k))[1]
    try:
        assert C.snapshot_state(tmp_path, "org/model", repo).complete
    finally:
        builtins.open = real_open
    assert not [f for f in opened if "/blobs/" in f or "/snapshots/" in f]


def test_new_commit_downloads_only_changed_files(hub, repo, tmp_path):
    dl(hub, tmp_path, revision="main")
    new = hub.commit("org/model", files={"model-00002-of-00002.safetensors": fake_safetensors(100_000, seed=7)}, delete=["tokenizer.json"])
    hub.requests.clear()
    commit = W.resolve_commit("org/model", "main", endpoint=hub.endpoint, token=False, offline=False)
    assert commit == new
    assert not C.snapshot_state(tmp_path, "org/model", new, revision="main").complete
    s = dl(hub, tmp_path, commit=new, revision="main")
    assert resolve_gets(hub) == ["model-00002-of-00002.safetensors"]
    assert (s.files, s.present) == (1, len(FILES) - 2)  # unchanged files: blobs re-linked, not fetched
    assert C.snapshot_state(tmp_path, "org/model", new, revision="main").complete
    assert not C.snapshot_state(tmp_path, "org/model", repo, revision="main").complete  # ref moved on


def test_allow_patterns_limit_download_and_state(hub, repo, tmp_path):
    pats = ["*.json", "*.safetensors"]
    s = dl(hub, tmp_path, commit=repo, allow_patterns=pats)
    assert "original/consolidated.pth" not in resolve_gets(hub) and s.files == len(FILES) - 1
    assert C.snapshot_state(tmp_path, "org/model", repo, allow_patterns=pats).complete
    full = C.snapshot_state(tmp_path, "org/model", repo)
    assert not full.complete and full.missing == ["original/consolidated.pth"]
    assert C.snapshot_state(tmp_path, "org/model", repo, allow_patterns=["original/"]).missing == ["original/consolidated.pth"]


def test_not_enough_disk_refuses_before_fetching(hub, repo, tmp_path, monkeypatch):
    monkeypatch.setattr(W, "_free_bytes", lambda path: 1000)
    with pytest.raises(W.NotEnoughDisk) as err:
        dl(hub, tmp_path, commit=repo)
    msg = message_and_clean(err)
    assert err.value.needed == sum(map(len, FILES.values())) and err.value.free == 1000
    assert "free" in msg and "HF_HUB_CACHE" in msg
    assert resolve_gets(hub) == []


def test_offline_with_incomplete_cache_is_an_error_and_complete_cache_works(hub, repo, tmp_path):
    with pytest.raises(W.OfflineIncomplete) as err:
        dl(hub, tmp_path, commit=repo, offline=True)
    assert "network" in message_and_clean(err)
    dl(hub, tmp_path, commit=repo)
    hub.requests.clear()
    assert dl(hub, tmp_path, commit=repo, offline=True).files == 0
    assert hub.requests == []


def test_unknown_repo_in_download(hub, tmp_path):
    with pytest.raises(W.RepoNotFound):
        dl(hub, tmp_path, repo="org/nope", commit="a" * 40)


def test_progress_bar_and_summary(hub, repo, tmp_path):
    out = io.StringIO()
    dl(hub, tmp_path, commit=repo, progress=True, stream=out)
    text = out.getvalue()
    assert "org/model@" in text and f"{len(FILES)} files" in text


# ----------------------------------------------------------------------------- kill -9 and resume
def test_kill_mid_file_then_resume(hub, tmp_path):
    chunk = 10 * 1024 * 1024  # the client writes in 10 MiB chunks: cut past one so a partial has bytes
    files = dict(FILES, **{"z-big.safetensors": os.urandom(chunk + 1024 * 1024)})
    sha = hub.create_repo("org/big", files)
    stalled = hub.cut_after("z-big.safetensors", chunk + 4096, then="hang")
    script = textwrap.dedent(
        f"""
        import sys; sys.path.insert(0, {str(ROOT)!r})
        from tasks.ops.weights import download
        download("org/big", {sha!r}, cache_dir={str(tmp_path)!r}, endpoint={hub.endpoint!r},
                 token=False, progress=False, max_workers=1)
        """
    )
    env = dict(os.environ, HF_ENDPOINT=hub.endpoint, HF_HUB_DISABLE_TELEMETRY="1")
    child = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen = []
    deadline = time.monotonic() + 60
    while not stalled.is_set() and time.monotonic() < deadline and child.poll() is None:
        seen.append(C.snapshot_state(tmp_path, "org/big", sha).complete)
        time.sleep(0.005)
    assert stalled.is_set(), child.stderr.read() if child.poll() is not None else "no stall"
    time.sleep(0.2)  # let the client flush its first chunk into the .incomplete file
    os.kill(child.pid, signal.SIGKILL)
    child.wait(10)
    assert seen and not any(seen), "never complete while downloading"
    state = C.snapshot_state(tmp_path, "org/big", sha)
    assert not state.complete and state.missing == ["z-big.safetensors"]
    partials = list((tmp_path / "models--org--big" / "blobs").glob("*.incomplete"))
    assert partials and partials[0].stat().st_size == chunk, "kill -9 leaves the client's partial file behind"

    hub.requests.clear()
    s = dl(hub, tmp_path, repo="org/big", commit=sha)
    assert resolve_gets(hub) == ["z-big.safetensors"], "finished files are not fetched again"
    assert s.files == 1 and s.present == len(FILES)
    assert not list((tmp_path / "models--org--big" / "blobs").glob("*.incomplete")), "stale partial removed"
    assert C.snapshot_state(tmp_path, "org/big", sha).complete
    assert C.verify_blobs(tmp_path, "org/big", sha) == []


# ----------------------------------------------------------------------------- verify
def test_verify_blobs_catches_a_flipped_byte(hub, repo, tmp_path):
    s = dl(hub, tmp_path, commit=repo)
    assert C.verify_blobs(tmp_path, "org/model", repo, workers=2) == []
    name = "model-00002-of-00002.safetensors"
    blob = (Path(s.path) / name).resolve()
    assert blob.name == hub.file_info("org/model", name)["sha256"]
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0x01
    blob.write_bytes(bytes(data))
    (Path(s.path) / "config.json").resolve().write_bytes(b"{}" + FILES["config.json"][2:])  # same size, new bytes
    assert C.snapshot_state(tmp_path, "org/model", repo).complete, "sizes match: only hashing can tell"
    assert C.verify_blobs(tmp_path, "org/model", repo, workers=2) == ["config.json", name]
    C.discard(tmp_path, "org/model", repo, ["config.json", name])
    dl(hub, tmp_path, commit=repo)
    assert C.verify_blobs(tmp_path, "org/model", repo) == []
