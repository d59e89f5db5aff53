#!/bin/sh
# Debian packages vLLM's CPU build needs at run time, installed only when missing: an offline base
# that already carries them (python3 with venv and headers, g++, libnuma1) builds without reaching a mirror.
# Usage: cpu-packages.sh python|all  (python: what creating the venv needs; all: what serving needs)
set -eu
need=""
command -v python3 >/dev/null 2>&1 || need="$need python3"
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need="$need python3-venv"
if [ "${1:-all}" = all ]; then
    command -v g++ >/dev/null 2>&1 || need="$need g++"
    # torch.compile's C++ includes Python.h
    python3 -c 'import os, sysconfig; raise SystemExit(not os.path.exists(sysconfig.get_paths()["include"] + "/Python.h"))' \
        2>/dev/null || need="$need python3-dev"
    ldconfig -p 2>/dev/null | grep -q 'libnuma\.so\.1 ' || need="$need libnuma1"
fi
[ -e /etc/ssl/certs/ca-certificates.crt ] || need="$need ca-certificates"
if [ -n "$need" ]; then
    echo "cpu-packages: installing$need"
    apt-get update
    # shellcheck disable=SC2086 # one word per package
    apt-get install -y --no-install-recommends $need
    rm -rf /var/lib/apt/lists/*
fi
