#!/usr/bin/env bash
# Run the test suite against an AddressSanitizer build of nnlayers' C code.
#
#   bash tools/asan.sh [test files or folders] [pytest args...]
#
# Builds the extension with -fsanitize=address (through NNLAYERS_EXTRA_CFLAGS)
# into a throwaway virtual environment ($ASAN_VENV, default
# /tmp/nnlayers-asan-venv), preloads libasan into Python, and runs pytest
# from outside the checkout so the instrumented copy is the one imported.
# Heap errors (overflows, use-after-free, double free) abort the run with a
# report; the last line says whether it ran clean. Leak checking is off
# (CPython's own allocations at exit drown it); the memory tests in
# tests/test_memory.py watch RSS and reference counts instead.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
VENV="${ASAN_VENV:-/tmp/nnlayers-asan-venv}"

# Build from a fresh copy of the working tree: pip builds in the source
# folder, and setuptools would reuse object files in build/ whose sources
# did not change, even when a file they #include did (dtype_f32.c includes
# the kernels), or that were built without the sanitizer.
SRC="$(mktemp -d)"
tar -C "$REPO" --exclude=./build --exclude=./.git --exclude='./.venv*' \
    --exclude=./.ci-venv -cf - . | tar -C "$SRC" -xf -

python3 -m venv --clear "$VENV"
. "$VENV/bin/activate"
pip install -q "$SRC[test]"           # dependencies (and a normal build)
pip install -q setuptools wheel numpy "scipy-openblas32==0.3.34.481.3"
rm -rf "$SRC/build"
NNLAYERS_EXTRA_CFLAGS="-fsanitize=address -fno-omit-frame-pointer -g -O1" \
    pip install -q --no-deps --force-reinstall --no-build-isolation "$SRC"
SO="$(find "$VENV" -name '_core*.so' -path '*nnlayers*' | head -1)"
if ! nm -D "$SO" | grep __asan_init > /dev/null; then   # (not -q: pipefail)
    echo "asan: FAILED ($SO is not instrumented)"
    exit 1
fi

# libstdc++ goes in too: C++ extensions (matplotlib's) throw exceptions,
# and ASan's __cxa_throw interceptor needs the real one loaded up front
# Tests that measure the process rather than nnlayers are meaningless under
# ASan and run in the normal suite instead: RSS / malloc growth (ASan keeps
# freed memory in quarantine and has its own allocator) and subprocesses
# under an address-space cap (ASan's shadow memory needs terabytes of it).
ASAN_DESELECT="not test_rss_does_not_grow_over_many_calls \
and not test_error_path_does_not_leak and not test_leak_detectors_see_a_real_leak \
and not test_err_linear_size_too_big_for_memory and not test_err_int_max_rows_fit"

LIBASAN="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)"
# Test files or folders among the arguments (relative to where this was
# started) replace the whole tests/ folder; they are made absolute before
# the run moves to an empty folder.
TARGETS=("$REPO/tests")
ARGS=()
for a in "$@"; do
    p="${a%%::*}"
    if [[ "$a" != -* && -e "$p" ]]; then
        [ "${TARGETS[0]}" = "$REPO/tests" ] && TARGETS=()
        TARGETS+=("$(cd "$(dirname "$p")" && pwd)/$(basename "$p")${a#"$p"}")
    else
        ARGS+=("$a")
    fi
done
cd "$(mktemp -d)"
set +e
LD_PRELOAD="$LIBASAN" \
ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:allocator_may_return_null=1" \
PYTHONMALLOC=malloc \
    python -m pytest "${TARGETS[@]}" -q -p no:cacheprovider \
        -k "$ASAN_DESELECT" "${ARGS[@]}"
status=$?
set -e
if [ $status -eq 0 ]; then
    echo "asan: clean (tests passed under AddressSanitizer)"
else
    echo "asan: FAILED (exit $status)"
fi
exit $status
