#!/usr/bin/env bash
# Install the Debian 12 packages neatml needs, only those missing. Usage:
#   scripts/install_deps.sh            build + test packages
#   scripts/install_deps.sh demo       also the Fashion-MNIST data set (make demo)
#   scripts/install_deps.sh bench      also PyTorch, the peer of the benchmark (make bench)
set -euo pipefail
if [ "$(uname -s)" = Darwin ]; then
  # macOS: Homebrew instead of apt. oneDNN for the CPU backend, libomp for its OpenMP loops
  # (optional: without it they run serially); the Metal backend needs only Xcode's SDK.
  brew_pkgs=(cmake pkg-config onednn libomp zlib ocaml dune opam)
  command -v brew >/dev/null || {
    echo "neatml: on macOS install Homebrew, then: brew install ${brew_pkgs[*]}" >&2
    exit 1
  }
  echo "neatml: brew install ${brew_pkgs[*]} (alcotest through opam: opam install alcotest)"
  brew install "${brew_pkgs[@]}"
  exit 0
fi
pkgs=(cmake make gcc g++ pkg-config libdnnl-dev zlib1g-dev libopenmpi-dev openmpi-bin
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
