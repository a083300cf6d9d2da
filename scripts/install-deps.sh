#!/usr/bin/env bash
# Installs the Debian packages qforge needs, and only those that are missing.
# Safe to run again; prints nothing when everything is present. Runs apt-get
# directly as root, through sudo otherwise.
#
#   scripts/install-deps.sh            build and test dependencies
#   scripts/install-deps.sh --bench    also the reference kit (PyTorch, oneDNN)
#   scripts/install-deps.sh --neon     also the aarch64 cross toolchain and qemu
set -euo pipefail

pkgs=(cmake g++ make libeigen3-dev libopenblas-dev libtbb-dev libhdf5-dev libcxxopts-dev
      libyaml-cpp-dev zlib1g-dev libgtest-dev libgmock-dev libbenchmark-dev)
for arg in "$@"; do
  case "$arg" in
    --bench) pkgs+=(python3-torch libdnnl-dev) ;;
    --neon) pkgs+=(g++-aarch64-linux-gnu qemu-user) ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "install-deps.sh: unknown option '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

missing=()
for p in "${pkgs[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$p")
done
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -eq 0 ]]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1; then
  SUDO=(sudo)
else
  echo "install-deps.sh: missing packages (${missing[*]}) and neither root nor sudo to install them" >&2
  exit 1
fi

echo "install-deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update -qq
"${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
