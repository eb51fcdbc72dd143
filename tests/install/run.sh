#!/usr/bin/env bash
# run.sh BUILD_DIR WORK_DIR — installs bitgrad from BUILD_DIR into
# WORK_DIR/prefix (cmake --install), builds tests/install/consumer
# outside the tree four ways: find_package with the shared and the static
# library, pkg-config shared and static; each program trains, exports and
# runs its export; and configures tests/install/parent, which adds the
# source tree with add_subdirectory. One line per check; fails on the first problem.
set -euo pipefail
src=$(cd "$(dirname "$0")/../.." && pwd)
build=$1
work=$2
rm -rf "$work"
mkdir -p "$work"
prefix="$work/prefix"
cmake --install "$build" --prefix "$prefix" >"$work/install.log"
lib=$(find "$prefix" -name 'libbitgrad.so.*' -type f | head -1)
test -n "$lib" && test -f "$prefix/include/bitgrad/bitgrad.h" && test -f "$prefix/include/bitgrad/tensor/tensor.h"
test -x "$prefix/bin/bitgrad"
test "$("$prefix/bin/bitgrad" --version)" = "bitgrad $(sed -n 's/^#define BG_VERSION_STRING "\(.*\)"/\1/p' "$src/tensor/tensor.h")"
soname=$(objdump -p "$lib" | awk '/SONAME/ {print $2}')
echo "ok   installed: $(basename "$lib") (SONAME $soname), headers under include/bitgrad/, the bitgrad program"
test ! -e "$prefix/include/bitgrad/tensor/tensor_internal.h"
echo "ok   internal headers are not installed"

# A sanitizer build's library needs the sanitizer runtime in its consumers.
san=
if grep -q '^BG_SANITIZE:BOOL=ON' "$build/CMakeCache.txt"; then
    san="-fsanitize=address,undefined"
fi

for kind in shared static; do
    flag=OFF
    [ $kind = static ] && flag=ON
    cmake -S "$src/tests/install/consumer" -B "$work/cmake-$kind" -DCMAKE_PREFIX_PATH="$prefix" -DBG_STATIC=$flag \
        -DCMAKE_C_FLAGS="$san" -DCMAKE_EXE_LINKER_FLAGS="$san" >"$work/cmake-$kind.log" 2>&1
    cmake --build "$work/cmake-$kind" >>"$work/cmake-$kind.log" 2>&1
    "$work/cmake-$kind/consumer" "$work/cmake-$kind.bgx" >"$work/run-cmake-$kind.log"
    echo "ok   find_package(bitgrad), $kind: $(tail -1 "$work/run-cmake-$kind.log")"
done
if [ "$(ldd "$work/cmake-shared/consumer" | grep -c libbitgrad)" -ne 1 ] ||
    [ "$(ldd "$work/cmake-static/consumer" | grep -c libbitgrad)" -ne 0 ]; then
    echo "FAIL the shared consumer must load libbitgrad.so and the static one must not"
    exit 1
fi
echo "ok   the shared consumer loads libbitgrad.so, the static one does not"

export PKG_CONFIG_PATH="$(dirname "$(find "$prefix" -name bitgrad.pc | head -1)")"
cc=${CC:-cc}
$cc $san "$src/tests/install/consumer/main.c" -o "$work/pc-shared" $(pkg-config --cflags --libs bitgrad) \
    -Wl,-rpath,"$(pkg-config --variable=libdir bitgrad)"
"$work/pc-shared" "$work/pc-shared.bgx" >"$work/run-pc-shared.log"
echo "ok   pkg-config --cflags --libs bitgrad: $(tail -1 "$work/run-pc-shared.log")"
$cc $san "$src/tests/install/consumer/main.c" -o "$work/pc-static" $(pkg-config --cflags bitgrad) \
    -Wl,-Bstatic -lbitgrad -Wl,-Bdynamic $(pkg-config --static --libs bitgrad | sed 's/ -lbitgrad / /')
"$work/pc-static" "$work/pc-static.bgx" >"$work/run-pc-static.log"
echo "ok   pkg-config --static (libbitgrad.a): $(tail -1 "$work/run-pc-static.log")"

# add_subdirectory: only the library and the parent's program are targets.
cmake -S "$src/tests/install/parent" -B "$work/parent" -DBITGRAD_SOURCE_DIR="$src" >"$work/parent.log" 2>&1
targets=$(cmake --build "$work/parent" --target help | sed -n 's/^\.\.\. //p')
for t in bitgrad consumer; do
    echo "$targets" | grep -qx "$t" || { echo "FAIL add_subdirectory: no target $t"; exit 1; }
done
if echo "$targets" | grep -qE '^(test_|bench_|fmnist_|bitgrad_cli$|replay_)'; then
    echo "FAIL add_subdirectory builds more than the library: $(echo "$targets" | grep -E '^(test_|bench_|fmnist_|bitgrad_cli$|replay_)' | head -3 | tr '\n' ' ')"
    exit 1
fi
echo "ok   add_subdirectory(bitgrad): the library only (no tests, examples, benches or program)"
