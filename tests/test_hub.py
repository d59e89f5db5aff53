"""The local test hub, checked with the real huggingface_hub client (all traffic on 127.0.0.1)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.hub import LocalHub, fake_safetensors  # sets HF_ENDPOINT to loopback before the client is imported

from huggingface_hub import HfApi, snapshot_download  # noqa: E402
from huggingface_hub.errors import (  # noqa: E402
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

FILES = {
    "config.json": b'{"architectures": ["LlamaForCausalLM"], "hidden_size": 64}',
    "tokenizer.json": b'{"model": {"vocab": {}}}',
    "model-00001-of-00002.safetensors": fake_safetensors(200_000, seed=1),
    "model-00002-of-00002.safetensors": fake_safetensors(200_000, seed=2),
    "sub/extra.txt": b"nested file",
}


@pytest.fixture
def hub():
    with LocalHub() as h:
        yield h


def fetch(hub: LocalHub, cache: Path, repo: str = "org/model", **kw) -> Path:
    kw.setdefault("token", False)  # never pick up a token from the environment or ~/.cache
    return Path(snapshot_download(repo, cache_dir=cache, endpoint=hub.endpoint, **kw))


def resolve_gets(hub: LocalHub) -> list[str]:
    return sorted(p.split("/resolve/", 1)[1].split("/", 1)[1] for m, p in hub.requests if m == "GET" and "/resolve/" in p)


def test_cold_download_gets_every_file_and_the_layout_the_client_documents(hub, tmp_path):
    sha = hub.create_repo("org/model", FILES)
    snap = fetch(hub, tmp_path)
    assert snap == tmp_path / "models--org--model" / "snapshots" / sha
    for path, data in FILES.items():
        assert (snap / path).read_bytes() == data
        assert (snap / path).is_symlink()
    assert (tmp_path / "models--org--model" / "refs" / "main").read_text() == sha
    assert (tmp_path / "models--org--model" / "trees" / f"{sha}.json").is_file()
    lfs = hub.file_info("org/model", "model-00001-of-00002.safetensors")
    assert (tmp_path / "models--org--model" / "blobs" / lfs["sha256"]).is_file()
    cfg = hub.file_info("org/model", "config.json")
    assert cfg["sha256"] is None and (tmp_path / "models--org--model" / "blobs" / cfg["etag"]).is_file()
    # revision + tree, then HEAD + GET per file
    assert hub.count("GET", "/revision/main") == 1
    assert hub.count("GET", "/tree/") == 1
    assert hub.count("HEAD", "/resolve/") == len(FILES)
    assert resolve_gets(hub) == sorted(FILES)


def test_warm_download_is_exactly_one_request(hub, tmp_path):
    hub.create_repo("org/model", FILES)
    fetch(hub, tmp_path)
    hub.requests.clear()
    fetch(hub, tmp_path)
    assert hub.requests == [("GET", "/api/models/org/model/revision/main")]


def test_commit_pin_present_is_zero_requests(hub, tmp_path):
    sha = hub.create_repo("org/model", FILES)
    fetch(hub, tmp_path, revision=sha)
    hub.requests.clear()
    fetch(hub, tmp_path, revision=sha)
    assert hub.requests == []


def test_new_commit_fetches_only_changed_files_and_old_sha_stays_resolvable(hub, tmp_path):
    old = hub.create_repo("org/model", FILES)
    fetch(hub, tmp_path)
    new = hub.commit(
        "org/model",
        files={"model-00002-of-00002.safetensors": fake_safetensors(200_000, seed=99)},
        delete=["sub/extra.txt"],
    )
    assert new != old
    hub.requests.clear()
    snap = fetch(hub, tmp_path)
    assert snap.name == new
    assert resolve_gets(hub) == ["model-00002-of-00002.safetensors"]
    assert not (snap / "sub" / "extra.txt").exists()
    api = HfApi(endpoint=hub.endpoint, token=False)
    assert api.repo_info("org/model").sha == new
    assert api.repo_info("org/model", revision=old).sha == old
    assert {s.rfilename for s in api.repo_info("org/model", revision=old).siblings} == set(FILES)


def test_gated_repo_needs_the_token(hub, tmp_path):
    hub.create_repo("org/gated", FILES, gated=True)
    with pytest.raises(GatedRepoError) as err:
        fetch(hub, tmp_path, repo="org/gated")
    assert err.value.response.status_code == 401
    with pytest.raises(GatedRepoError) as err:
        fetch(hub, tmp_path, repo="org/gated", token="hf_wrong")
    assert err.value.response.status_code == 403
    assert all(not e["auth"] for e in hub.log[:1])
    snap = fetch(hub, tmp_path, repo="org/gated", token=hub.token)
    assert (snap / "config.json").read_bytes() == FILES["config.json"]


def test_unknown_repo_and_revision(hub, tmp_path):
    hub.create_repo("org/model", FILES)
    with pytest.raises(RepositoryNotFoundError) as err:
        fetch(hub, tmp_path, repo="org/nope")
    assert not isinstance(err.value, GatedRepoError)
    with pytest.raises(RevisionNotFoundError):
        fetch(hub, tmp_path, revision="no-such-branch")
    with pytest.raises(RepositoryNotFoundError):
        HfApi(endpoint=hub.endpoint, token=False).repo_info("org/nope")


def test_dropped_connection_is_retried_by_the_client_resuming_at_its_10mib_chunk(hub, tmp_path):
    # http_get retries a dropped stream itself, with Range from the bytes it has written; it writes in
    # 10 MiB chunks, so a cut before the first chunk restarts from 0 and a later cut resumes (206).
    chunk = 10 * 1024 * 1024
    big = os.urandom(chunk + 2 * 1024 * 1024)
    hub.create_repo("org/big", {"model.safetensors": big, "config.json": b"{}"})
    cut = hub.cut_after("model.safetensors", chunk + 1000)
    snap = fetch(hub, tmp_path, repo="org/big")
    assert cut.is_set()
    assert (snap / "model.safetensors").read_bytes() == big
    gets = [(e["status"], e["range"]) for e in hub.log if e["method"] == "GET" and "model.safetensors" in e["path"]]
    assert gets == [(200, None), (206, f"bytes={chunk}-")]

    hub.create_repo("org/small", FILES)
    name = "model-00001-of-00002.safetensors"
    hub.cut_after(name, 100_000)
    snap = fetch(hub, tmp_path, repo="org/small")
    assert (snap / name).read_bytes() == FILES[name]
    gets = [(e["status"], e["range"]) for e in hub.log if e["method"] == "GET" and name in e["path"]]
    assert gets == [(200, None), (200, None)]


def test_cut_transfer_raises_then_a_rerun_completes_and_refetches_only_the_cut_file(hub, tmp_path):
    # One worker walks the files in tree order, so the cut file (last in order) fails after the
    # others are done; the outage makes the client's own retry fail fast (503 on GET is not retried).
    files = {k: v for k, v in FILES.items() if k.startswith(("config", "model"))}
    hub.create_repo("org/model", files)
    name = "model-00002-of-00002.safetensors"
    cut = hub.cut_after(name, 50_000, then="outage")
    with pytest.raises(HfHubHTTPError) as err:
        fetch(hub, tmp_path, max_workers=1)
    assert err.value.response.status_code == 503
    assert cut.is_set()
    blobs = tmp_path / "models--org--model" / "blobs"
    assert not list(blobs.glob("*.incomplete")), "the client deletes its partial file on error"
    (snap_dir,) = (tmp_path / "models--org--model" / "snapshots").iterdir()
    done_before = {p.relative_to(snap_dir).as_posix() for p in snap_dir.rglob("*") if p.is_file()}
    assert done_before == set(files) - {name}
    hub.outage = False
    hub.requests.clear()
    snap = fetch(hub, tmp_path)
    assert {p: (snap / p).read_bytes() for p in files} == files
    assert resolve_gets(hub) == [name]
    # the partial file restarts from zero: no Range on the re-run
    assert all(e["range"] is None for e in hub.log[-len(hub.requests):])


def test_hub_only_listens_on_loopback(hub):
    assert hub.endpoint.startswith("http://127.0.0.1:")
    assert os.environ["HF_ENDPOINT"] == hub.endpoint
