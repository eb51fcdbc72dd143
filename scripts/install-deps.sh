#!/usr/bin/env bash
# install-deps.sh — installs every Debian package bitgrad needs to build, test
# and run its demo. Non-interactive and idempotent: packages already installed
# are skipped (and when nothing is missing, apt is not touched at all). Runs
# as root directly, otherwise through sudo.
#
#   bash scripts/install-deps.sh              # build + test + demo
#   bash scripts/install-deps.sh --reference  # also python3-torch + numpy, for
#                                             # tests/reference/ and bench/torch_fmnist.py
set -euo pipefail

usage() {
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
}

reference=0
for arg in "$@"; do
    case "$arg" in
        --reference) reference=1 ;;
        -h | --help) usage; exit 0 ;;
        *) echo "install-deps.sh: unknown argument: $arg (try --help)" >&2; exit 2 ;;
    esac
done

# libopenblas-openmp-dev: the OpenMP build of OpenBLAS, which CMakeLists.txt
# links by path so that OpenBLAS shares our OpenMP thread pool (the default
# pthread build's threads spin against it); the system default stays pthread.
# bible-kjv + bible-kjv-text: the `bible` program that prints the King James
# Bible, the language models' default corpus (io/text.h, scripts/get-kjv.sh).
packages=(
    build-essential cmake pkg-config
    libopenblas-dev libopenblas-openmp-dev libdnnl-dev ocl-icd-opencl-dev
    libpng-dev zlib1g-dev libjansson-dev libcmocka-dev
    dataset-fashion-mnist bible-kjv bible-kjv-text
    libprotobuf-c-dev protobuf-c-compiler libonnx-dev python3-onnx nodejs
    clang libclang-rt-dev libomp-dev
    libopenmpi-dev openmpi-bin
)
if [ "$reference" = 1 ]; then
    packages+=(python3-torch python3-numpy)
fi

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
# npm: Debian's package, unless the installed Node.js brings its own (a
# NodeSource nodejs provides npm and conflicts with Debian's).
if ! command -v npm >/dev/null 2>&1; then
    missing+=(npm)
fi

# The npm packages of two tests, pinned by package.json + package-lock.json
# and installed into tests/<dir>/node_modules when that is missing:
# - tests/onnx: onnxruntime-node for tests/test_onnx.c.
#   ONNXRUNTIME_NODE_INSTALL=skip: the CPU binaries ship inside the npm
#   package; skip the optional GPU downloads of its install script.
# - tests/llama: node-llama-cpp + @node-llama-cpp/linux-x64 (llama.cpp's
#   prebuilt CPU libraries) for tests/test_gguf.c. --omit=optional skips the
#   other platforms' and GPU packages; --ignore-scripts skips node-llama-cpp's
#   postinstall (the test loads the prebuilt libraries with build: "never").
install_npm_dir() {   # DIR PACKAGE [npm options...]
    local name="tests/$1" pkg="$2" dir
    shift 2
    dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/$name"
    if [ -d "$dir/node_modules/$pkg" ]; then
        echo "install-deps.sh: $name/node_modules is already installed"
        return 0
    fi
    echo "install-deps.sh: installing $pkg into $name/node_modules"
    if [ -f "$dir/package-lock.json" ]; then
        npm ci --prefix "$dir" --no-audit --no-fund "$@"
    else
        npm install --prefix "$dir" --no-audit --no-fund "$@"
    fi
}

install_npm() {
    ONNXRUNTIME_NODE_INSTALL=skip install_npm_dir onnx onnxruntime-node
    install_npm_dir llama @node-llama-cpp/linux-x64 --omit=optional --ignore-scripts
}

if [ "${#missing[@]}" -eq 0 ]; then
    echo "install-deps.sh: all ${#packages[@]} packages are already installed"
    install_npm
    exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
    as_root=()
elif command -v sudo >/dev/null 2>&1; then
    # sudo may ask a person at a terminal for a password, never a script.
    if [ -t 0 ]; then as_root=(sudo); else as_root=(sudo -n); fi
else
    echo "install-deps.sh: missing ${missing[*]}, and not root without sudo: run this script as root" >&2
    exit 1
fi

echo "install-deps.sh: installing ${missing[*]}"
apt_opts=(-y -q -o DPkg::Lock::Timeout=600 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
"${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install "${apt_opts[@]}" --no-install-recommends "${missing[@]}"
install_npm
echo "install-deps.sh: done"
