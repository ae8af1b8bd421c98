#!/usr/bin/env bash
# build.sh: install what is missing (install.sh), then configure and build
# the project with CMake. Used by `make build`, up.sh, run.sh and test.sh.
#
#   BUILD_DIR   build directory, relative to the repository root or
#               absolute (default: build)
#   CMAKE_ARGS  extra configure arguments, split on spaces
#               (e.g. "-DORDERS_ASAN=ON -DORDERS_WERROR=ON")
#   JOBS        parallel build jobs (default: 2)
#   BUILD_TARGETS  build only these targets (space-separated; default: all)
set -euo pipefail

SCRIPT_NAME=build
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

"$ROOT/deploy/local/install.sh"

build_dir=${BUILD_DIR:-build}
case $build_dir in
/*) ;;
*) build_dir=$ROOT/$build_dir ;;
esac
read -r -a extra <<<"${CMAKE_ARGS:-}"

# Under `make`, the outer make's settings would turn the inner build's
# output into "Entering directory" noise; the job count is explicit anyway.
unset MAKEFLAGS MFLAGS MAKELEVEL

say "configuring $build_dir ${extra[*]}"
# The build type comes first so that CMAKE_ARGS can override it.
cmake -S "$ROOT" -B "$build_dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "${extra[@]}" >/dev/null
read -r -a targets <<<"${BUILD_TARGETS:-}"
cmake --build "$build_dir" -j "${JOBS:-2}" ${targets[0]+--target "${targets[@]}"}
