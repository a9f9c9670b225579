#!/usr/bin/env bash
# CI: install Debian's Slurm and munge if missing, then start the single-node cluster that
# tests/cli/test_launchers.py submits to (scripts/slurm-local.sh start). Needs root or sudo -n.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
[[ $EUID -eq 0 ]] || SUDO="sudo -n"

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q slurm-wlm munge
fi
$SUDO bash scripts/slurm-local.sh start
sinfo
