#!/usr/bin/env bash
# Install the Debian 12 packages neatml needs, only those missing. Usage:
#   scripts/install_deps.sh            build + test packages
#   scripts/install_deps.sh demo       also the Fashion-MNIST data set (make demo)
#   scripts/install_deps.sh bench      also PyTorch, the peer of the benchmark (make bench)
set -euo pipefail
pkgs=(cmake make gcc g++ pkg-config libdnnl-dev zlib1g-dev
      clang-14 libclang-rt-14-dev libomp-14-dev
      ocaml-nox ocaml-dune ocaml-findlib libalcotest-ocaml-dev)
case "${1:-}" in
  demo) pkgs+=(dataset-fashion-mnist) ;;
  bench) pkgs+=(python3-torch) ;;
esac
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "neatml: missing packages: ${missing[*]} (no apt-get here: install them by hand)" >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then sudo="sudo"; else
    echo "neatml: missing packages: ${missing[*]}; run as root: apt-get install ${missing[*]}" >&2
    exit 1
  fi
fi
echo "neatml: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q >/dev/null
$sudo apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
