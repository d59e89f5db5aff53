#!/usr/bin/env bash
# Run the test suite on a fresh machine: install what it needs (as root: Debian packages),
# start the private test dockerd, then pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
need=()
for cmd in dockerd sshd rsync ip iptables busybox debootstrap tini systemd-analyze; do
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || need+=("$cmd")
done
if [ "${#need[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "run-tests: installing Debian packages for: ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends docker.io openssh-server openssh-client rsync \
      iproute2 iptables busybox-static debootstrap tini systemd ca-certificates >/dev/null
  else
    echo "run-tests: missing ${need[*]}; Docker and netns tests will be skipped" >&2
  fi
fi
python3 -m pip install --quiet --disable-pip-version-check -e '.[test]'
if [ "$(id -u)" = 0 ] && command -v dockerd >/dev/null; then
  bash tests/harness/dockerd.sh start
  eval "$(bash tests/harness/dockerd.sh env)"
fi
export DOCKER_BUILDKIT=0
exec python3 -m pytest -q --durations=30 "$@"
