"""Ssh and ssh_argv against real sshd's: host keys verified, every call bounded in time."""
from __future__ import annotations

import hashlib
import shlex
import subprocess
import threading
import time
import uuid
from pathlib import Path

import paramiko
import pytest

from harness import cluster as rc
from tasks.errors import RunError
from tasks.nodes import Node
from tasks.connect import SshSettings
from tasks.connect.options import ssh_argv
from tasks.connect import ChangedHostKeyError, Local, Ssh, UnknownHostKeyError, connector_for
from tasks.connect.ssh import with_env

pytestmark = pytest.mark.cluster


def settings(c: rc.TestCluster, **kw) -> SshSettings:
    """The harness's client files: its ssh_config (HostName/User/IdentityFile per node) and known_hosts."""
    kw.setdefault("known_hosts", c.known_hosts)
    kw.setdefault("connect_timeout", 2)
    return SshSettings(ssh_config=c.ssh_config, **kw)


def test_reads_from_the_nodes_own_daemon_via_ssh_config(cluster3: rc.TestCluster) -> None:
    n2 = cluster3.node("n2")
    # "n2" only resolves through the ssh_config (HostName, User root, IdentityFile)
    with Ssh(Node("n2"), settings(cluster3)) as r:
        res = r.read(["docker", "info", "--format", "{{.Name}}|{{.DockerRootDir}}"])
        assert res.stdout.strip() == f"n2|{n2.docker_root}"
        failed = r.read(["sh", "-c", "echo oops >&2; exit 3"], check=False)
        assert (failed.exit_code, failed.stderr.strip()) == (3, "oops")
        with pytest.raises(RunError) as e:
            r.read(["sh", "-c", "echo boom >&2; exit 4"])
        assert e.value.exit_status == 4 and "boom" in str(e.value) and e.value.node == "n2"
    with Ssh(Node(n2.ip, "root"), settings(cluster3)) as r:
        assert r.run(["hostname"], stream=False).stdout.strip() == "n2"


def test_unknown_host_key_is_refused_with_the_way_to_accept_it(cluster3: rc.TestCluster,
                                                               tmp_path: Path) -> None:
    n1, n2, n3 = cluster3.nodes
    kh = cluster3.write_known_hosts(tmp_path / "known_hosts", [n1, n3])
    before = kh.read_text()
    with pytest.raises(UnknownHostKeyError) as e:
        Ssh(Node(n2.ip, "root"), settings(cluster3, known_hosts=kh)).read(["true"])
    msg = str(e.value)
    openssh_fp = subprocess.run(["ssh-keygen", "-lf", str(n2.run_dir / "ssh_host_ed25519_key.pub")],
                                capture_output=True, text=True, check=True).stdout.split()[1]
    assert openssh_fp.startswith("SHA256:") and openssh_fp in msg
    assert f"ssh-keyscan -H {n2.ip} >> {kh}" in msg
    assert "--trust-new-hosts" in msg and e.value.node == f"root@{n2.ip}"
    assert kh.read_text() == before, "an unknown key must never be recorded without trust_new_hosts"
    # control: the same file works for a node it knows
    assert Ssh(Node(n3.ip, "root"), settings(cluster3, known_hosts=kh)).read(["hostname"]).stdout \
        .strip() == "n3"


@pytest.mark.parametrize("trust", [False, True])
def test_changed_host_key_is_refused_loudly_even_when_trusting_new_hosts(
        cluster3: rc.TestCluster, tmp_path: Path, trust: bool) -> None:
    n2, n3 = cluster3.node("n2"), cluster3.node("n3")
    kh = tmp_path / "known_hosts"
    kh.write_text(f"{n2.ip} {n3.host_key_pub}\n")  # n2's address with another machine's key
    with pytest.raises(ChangedHostKeyError) as e:
        Ssh(Node(n2.ip, "root"), settings(cluster3, known_hosts=kh, trust_new_hosts=trust)).read(["true"])
    msg = str(e.value)
    assert "HAS CHANGED" in msg and "attack" in msg and f"ssh-keygen -R {n2.ip}" in msg
    assert kh.read_text() == f"{n2.ip} {n3.host_key_pub}\n"


def test_trust_new_hosts_records_the_key_then_verifies_against_it(cluster3: rc.TestCluster,
                                                                  tmp_path: Path) -> None:
    n2 = cluster3.node("n2")
    kh = tmp_path / "sub" / "known_hosts"  # not there yet: created like ~/.ssh/known_hosts would be
    with Ssh(Node(n2.ip, "root"), settings(cluster3, known_hosts=kh, trust_new_hosts=True)) as r:
        assert r.read(["hostname"]).stdout.strip() == "n2"
    recorded = paramiko.HostKeys(str(kh))
    assert recorded.lookup(n2.ip)["ssh-ed25519"].get_base64() == n2.host_key_pub.split()[1]
    assert n2.ip not in kh.read_text(), "recorded hashed, like ssh-keyscan -H"
    # a later strict run verifies against what was recorded, and so does the OpenSSH client
    strict = settings(cluster3, known_hosts=kh)
    assert Ssh(Node(n2.ip, "root"), strict).read(["hostname"]).stdout.strip() == "n2"
    p = subprocess.run([*ssh_argv(Node(n2.ip, "root"), strict), "hostname"], capture_output=True, text=True,
                       timeout=30)
    assert (p.returncode, p.stdout.strip()) == (0, "n2"), p.stderr
    # a different key for the same address is now a changed key, trusting or not
    kh.write_text(kh.read_text().replace(n2.host_key_pub.split()[1], cluster3.node("n3").host_key_pub.split()[1]))
    with pytest.raises(ChangedHostKeyError):
        Ssh(Node(n2.ip, "root"), settings(cluster3, known_hosts=kh, trust_new_hosts=True)).read(["true"])


def test_ssh_argv_refuses_what_remote_runner_refuses(cluster3: rc.TestCluster, tmp_path: Path) -> None:
    n1, n2, n3 = cluster3.nodes
    kh = cluster3.write_known_hosts(tmp_path / "known_hosts", [n1, n3])
    argv = ssh_argv(Node(n2.ip, "root"), settings(cluster3, known_hosts=kh))
    assert argv[-1] == f"root@{n2.ip}" and "StrictHostKeyChecking=yes" in argv and "BatchMode=yes" in argv
    p = subprocess.run([*argv, "true"], capture_output=True, text=True, timeout=30)
    assert p.returncode == 255 and "Host key verification failed" in p.stderr
    # a pipeline over the same options, as image streaming uses it
    ok = ssh_argv(Node("n3"), settings(cluster3, known_hosts=kh))
    p = subprocess.run([*ok, shlex.join(["docker", "info", "--format", "{{.Name}}"])], capture_output=True,
                       text=True, timeout=30)
    assert (p.returncode, p.stdout.strip()) == (0, "n3"), p.stderr


def test_stopped_sshd_fails_within_the_connect_timeout(cluster3: rc.TestCluster) -> None:
    n3 = cluster3.node("n3")
    n3.stop_sshd()
    t0 = time.monotonic()
    with pytest.raises(RunError) as e:
        Ssh(Node(n3.ip, "root"), settings(cluster3)).read(["true"])
    assert time.monotonic() - t0 < 3
    assert "refused" in str(e.value) and e.value.node == f"root@{n3.ip}"


def test_unreachable_node_fails_within_the_connect_timeout(cluster3: rc.TestCluster) -> None:
    n3 = cluster3.node("n3")
    n3.link_down()
    t0 = time.monotonic()
    with pytest.raises(RunError) as e:
        Ssh(Node(n3.ip, "root"), settings(cluster3, connect_timeout=1.5)).read(["true"])
    assert time.monotonic() - t0 < 3.5
    assert "no answer within" in str(e.value)


def _cut_link_during(node: rc.Node, runner: Ssh, argv: list[str]) -> tuple[float, RunError]:
    runner.read(["true"])  # connected while the link was up
    cut = threading.Timer(0.5, node.link_down)
    cut.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(RunError) as e:
            runner.run(argv, stream=False)
        return time.monotonic() - t0, e.value
    finally:
        cut.cancel()
        cut.join()
        runner.close()


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")  # no traceback from fabric's timer
def test_link_cut_mid_command_fails_within_the_command_timeout(cluster3: rc.TestCluster) -> None:
    n2 = cluster3.node("n2")
    r = Ssh(Node(n2.ip, "root"), settings(cluster3, command_timeout=3))
    took, err = _cut_link_during(n2, r, ["sleep", "30"])
    assert 2.5 < took < 6, took
    assert "timed out after 3 s" in str(err) and err.command == "sleep 30"


def test_link_cut_without_command_timeout_is_caught_by_keepalive(cluster3: rc.TestCluster) -> None:
    n2 = cluster3.node("n2")
    s = settings(cluster3, connect_timeout=2)  # dead after 6 s of silence
    took, err = _cut_link_during(n2, Ssh(Node(n2.ip, "root"), s), ["sleep", "60"])
    assert took < 3 * s.dead_after, took
    assert "lost the SSH connection" in str(err)


def test_argv_and_env_arrive_literally(cluster3: rc.TestCluster) -> None:
    n2 = cluster3.node("n2")
    canary = f"/tmp/rr-canary-{uuid.uuid4().hex}"
    words = [f"$(touch {canary})", f"`touch {canary}`", f"; touch {canary}", "a  b", "'\"", "*"]
    with Ssh(Node(n2.ip, "root"), settings(cluster3)) as r:
        out = r.read(["printf", "%s\\n", *words]).stdout
        assert out.splitlines() == words
        env = {"RR_VALUE": f"bar baz $(touch {canary}) 'q'"}
        assert r.read(with_env(env, ["printenv", "RR_VALUE"])).stdout == env["RR_VALUE"] + "\n"
    assert n2.run(["test", "-e", canary]).returncode == 1
    assert not Path(canary).exists()


def test_feed_sends_bytes_exactly_with_the_same_host_key_checks(cluster3: rc.TestCluster, tmp_path: Path) -> None:
    n1, n2, n3 = cluster3.nodes
    data = bytes(range(256)) * 8192 + b"\r\n\x00end"  # 2 MB of every byte value
    with Ssh(Node(n2.ip, "root"), settings(cluster3)) as r:
        res = r.feed(["sh", "-c", "sha256sum; echo to-stderr >&2"], data)
        assert res.stdout.split()[0] == hashlib.sha256(data).hexdigest() and res.stderr.strip() == "to-stderr"
        assert r.feed(["sh", "-c", "cat >/dev/null; exit 5"], b"x", check=False).exit_code == 5
        with pytest.raises(RunError):
            r.feed(["sh", "-c", "cat >/dev/null; exit 5"], b"x")
    kh = cluster3.write_known_hosts(tmp_path / "known_hosts", [n1, n3])
    with pytest.raises(UnknownHostKeyError):
        Ssh(Node(n2.ip, "root"), settings(cluster3, known_hosts=kh)).feed(["true"], b"")


def test_connector_for_picks_local_or_ssh(cluster3: rc.TestCluster) -> None:
    s = settings(cluster3)
    assert isinstance(connector_for(Node("localhost"), s), Local)
    assert isinstance(connector_for(Node("n2"), s), Ssh)
