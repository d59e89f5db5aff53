"""--apply-vllm-pr on the netns cluster (issue #14): the head fetches the patch once from a server on the
host's bridge address, every node's mods image applies it with `git apply`, and an offline re-run
fetches and applies nothing.

The cluster stand-in is FROM the Debian Ray test image, which already has git's libraries (libc6,
libpcre2, zlib are in Debian's minbase), so only /usr/bin/git from Debian's git package is copied in
(tests/harness/gitroot.py), plus a fake installed `vllm` package for the patch to change.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from harness import cluster as rc
from harness.gitroot import git_root
from harness.patches import PatchServer
from test_cluster_e2e import executed, ours, project, recipe, tool  # noqa: F401 - project is a fixture

SITE = "/usr/local/lib/python3/dist-packages"
PR = 5151
DIFF = """\
diff --git a/vllm/envs.py b/vllm/envs.py
--- a/vllm/envs.py
+++ b/vllm/envs.py
@@ -1 +1 @@
-PATCHED = False
+PATCHED = True
"""


def test_a_vllm_pr_reaches_every_node_once(cluster3: rc.TestCluster, project: Path) -> None:  # noqa: F811
    docker = project / "docker"
    shutil.copy2(git_root() / "usr" / "bin" / "git", docker / "git")
    (docker / "vllm_pkg").mkdir()
    (docker / "vllm_pkg" / "envs.py").write_text("PATCHED = False\n")
    (docker / "Dockerfile").write_text((docker / "Dockerfile").read_text()
                                       + f"COPY git /usr/bin/git\nCOPY vllm_pkg {SITE}/vllm\n")
    for node in cluster3.nodes:  # every node starts without a mods image
        derived = node.docker("images", "-q", "--filter", "reference=runrecipe-mods").stdout.split()
        if derived:
            node.docker("rmi", "-f", *derived)
    recipe(project, "prc", backend="")
    server = PatchServer({PR: DIFF}, host=rc.HOST_IP)
    try:
        args = ["prc", "--setup", "-d", "--apply-vllm-pr", str(PR), "--ready-timeout", "120"]
        online = {"RUNRECIPE_VLLM_PR_BASE": server.base, "HF_HUB_OFFLINE": ""}  # the recipe has no model
        first = tool(cluster3, project, *args, env=online)
        assert first.returncode == 0, first.stdout + first.stderr
        ips = [n.ip for n in cluster3.nodes]
        assert [t for t in executed(first.stdout) if t.startswith("mods:")] == [f"mods:prc@{ip}" for ip in ips]
        for node in cluster3.nodes:
            (cid,) = ours(node, "prc")
            assert node.docker("exec", cid, "cat", f"{SITE}/vllm/envs.py").stdout == "PATCHED = True\n", node.name
        again = tool(cluster3, project, *args)  # offline (HF_HUB_OFFLINE=1): the cache answers
        assert again.returncode == 0 and executed(again.stdout) == [], again.stdout + again.stderr
        assert server.hits == 1
    finally:
        server.stop()
    assert tool(cluster3, project, "stop", "prc").returncode == 0
