#!/usr/bin/env bash
# check.sh [yamllint|k8s|k8s_selftest|compose|compose_selftest|all]: the offline checks of
# the deployment files (run by ctest as deploy/*; no cluster, no Docker engine):
#   yamllint          every YAML file under deploy/, docker-compose.yml and .yamllint
#                     itself pass yamllint with the repository's .yamllint, and a planted
#                     bad file fails it (so a broken or missing config cannot pass)
#   k8s               tests/deploy/check_k8s.js: build deploy/k8s's overlays, schemas,
#                     types and properties
#   compose           tests/deploy/check_compose.js: docker-compose.yml, the Dockerfile,
#                     .dockerignore
#   *_selftest        the same checkers with violations planted: each must be caught
# The Node packages come from tools/node (tools/node/setup.sh, ctest's contract/node_modules).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
fail() {
	printf 'deploy-check: FAIL: %s\n' "$*" >&2
	exit 1
}

run_yamllint() {
	command -v yamllint >/dev/null || fail "yamllint not found; run deploy/local/install.sh"
	cd "$ROOT"
	local files=()
	mapfile -t files < <(git ls-files -co --exclude-standard -- 'deploy/*.yaml' 'deploy/*.yml' \
		docker-compose.yml .yamllint | sort -u)
	[ ${#files[@]} -gt 3 ] || fail "found only ${#files[@]} YAML files to lint"
	yamllint --strict -c .yamllint -f parsable "${files[@]}" || fail "yamllint found problems"
	echo "deploy-check: yamllint: ${#files[@]} files clean"

	# The same config must refuse a bad file: a duplicate key, a long line, bad indentation.
	local work
	work=$(mktemp -d)
	trap 'rm -rf "$work"' RETURN
	printf 'a: 1\na: 2\nb:\n   - c\nd: %0120d\n' 0 >"$work/bad.yaml"
	local out
	if out=$(yamllint --strict -c .yamllint -f parsable "$work/bad.yaml" 2>&1); then
		fail "yamllint passed a planted bad file"
	fi
	for rule in key-duplicates line-length indentation; do
		grep -q "($rule)" <<<"$out" || fail "yamllint did not report $rule in the planted file: $out"
	done
	echo "deploy-check: yamllint self-test: the planted file fails (key-duplicates, line-length, indentation)"
}

command -v node >/dev/null || fail "node not found; run deploy/local/install.sh"
case ${1:-all} in
yamllint) run_yamllint ;;
k8s) node "$ROOT/tests/deploy/check_k8s.js" ;;
k8s_selftest) node "$ROOT/tests/deploy/check_k8s.js" --self-test ;;
compose) node "$ROOT/tests/deploy/check_compose.js" ;;
compose_selftest) node "$ROOT/tests/deploy/check_compose.js" --self-test ;;
all)
	run_yamllint
	for script in check_k8s.js check_compose.js; do
		node "$ROOT/tests/deploy/$script"
		node "$ROOT/tests/deploy/$script" --self-test
	done
	;;
*) fail "unknown part '$1' (yamllint, k8s, k8s_selftest, compose, compose_selftest, all)" ;;
esac
