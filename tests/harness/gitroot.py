"""git for the busybox stand-in image, from Debian packages fetched on the host.

--apply-vllm-pr applies its patch with `git apply` inside the mods image (as the origin does), and the
stand-in image is busybox FROM scratch, which has no git. Busybox has no `git` applet, and its `patch`
is not what the product runs, so the test image gets the real git: `apt-get download` of git and the
three libraries its binary links (libc6, libpcre2-8-0, zlib1g), unpacked with `dpkg -x`, and only
/usr/bin/git plus those libraries copied in. Cached under /var/lib/runrecipe-test/cache, so a test run
fetches the packages at most once per machine.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from .rayimage import CACHE

PACKAGES = ("git", "libc6", "libpcre2-8-0", "zlib1g")
LIBRARIES = ("libc6", "libpcre2-8-0", "zlib1g")


def git_root() -> Path:
    """A folder to COPY to / of an image: /usr/bin/git and the libraries it needs (built once)."""
    root = CACHE / "git-root"
    if (root / "usr" / "bin" / "git").is_file():
        return root
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="git-root-", dir=CACHE) as tmp:
        work = Path(tmp)
        subprocess.run(["apt-get", "download", *PACKAGES], cwd=work, check=True, capture_output=True, timeout=300)
        staged = work / "root"
        for pkg in LIBRARIES:
            (deb,) = work.glob(f"{pkg}_*.deb")
            subprocess.run(["dpkg", "-x", str(deb), str(staged)], check=True, timeout=120)
        shutil.rmtree(staged / "usr" / "share", ignore_errors=True)  # docs and locales
        (git_deb,) = work.glob("git_*.deb")
        subprocess.run(["dpkg", "-x", str(git_deb), str(work / "git")], check=True, timeout=120)
        (staged / "usr" / "bin").mkdir(parents=True, exist_ok=True)
        shutil.copy2(work / "git" / "usr" / "bin" / "git", staged / "usr" / "bin" / "git")
        try:
            staged.rename(root)
        except OSError:  # another test process finished first
            if not (root / "usr" / "bin" / "git").is_file():
                raise
    return root
