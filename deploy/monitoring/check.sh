#!/usr/bin/env bash
# check.sh: the monitoring files hold together (run by ctest, no services):
#   - alerts.yml passes promtool check rules, and every alert has a
#     severity, a summary and a runbook_url;
#   - prometheus.yml passes promtool check config (which loads alerts.yml);
#   - alerts_test.yml passes promtool test rules: alerts fire on synthetic
#     series, and do not where they must not;
#   - grafana/orders.json is JSON, every panel has an id of its own and at
#     least one query, every query a non-empty expr, and every expr is valid
#     PromQL (promtool checks them as recording rules, with Grafana's
#     $__rate_interval as 5m).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
DASHBOARD=$HERE/grafana/orders.json
fail() {
	printf 'monitoring-check: FAIL: %s\n' "$*" >&2
	exit 1
}
for tool in promtool jq; do
	command -v "$tool" >/dev/null || fail "$tool not found; run deploy/local/install.sh"
done
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$HERE"

promtool check rules alerts.yml
promtool check config prometheus.yml
promtool test rules alerts_test.yml

alerts=$(grep -c '^ *- alert:' alerts.yml)
for field in 'severity:' 'summary:' 'runbook_url: "deploy/README.md#'; do
	n=$(grep -c "^ *$field" alerts.yml || true)
	[ "$n" = "$alerts" ] || fail "alerts.yml: $alerts alerts but $n with '$field'"
done
echo "monitoring-check: $alerts alerts, each with a severity, a summary and a runbook_url"

jq -e . "$DASHBOARD" >/dev/null || fail "$DASHBOARD is not JSON"
panels=$(jq '.panels | length' "$DASHBOARD")
[ "$panels" -gt 0 ] || fail "$DASHBOARD has no panels"
bad=$(jq -r '.panels[] | select((.targets // []) | length == 0) | .title' "$DASHBOARD")
[ -z "$bad" ] || fail "panels without a query: $bad"
bad=$(jq -r '.panels[] | select(any(.targets[]; (.expr // "") | test("^\\s*$"))) | .title' "$DASHBOARD")
[ -z "$bad" ] || fail "panels with an empty expr: $bad"
dups=$(jq '[.panels[].id] | length - (unique | length)' "$DASHBOARD")
[ "$dups" = 0 ] || fail "$dups panel id(s) used twice"
# Each expr becomes a recording rule, so promtool parses it as PromQL.
{
	echo 'groups:'
	echo '  - name: dashboard'
	echo '    rules:'
	jq -r '.panels[] | .id as $p | .targets[] | [$p, .refId, .expr] | @json' "$DASHBOARD" |
		while IFS= read -r row; do
			printf '      - record: dashboard:panel_%s_%s\n' \
				"$(jq -r '.[0]' <<<"$row")" "$(jq -r '.[1]' <<<"$row")"
			# A JSON string is a valid YAML double-quoted string.
			printf '        expr: %s\n' "$(jq -c '.[2] | gsub("\\$__rate_interval"; "5m")' <<<"$row")"
		done
} >"$work/dashboard-rules.yml"
if ! out=$(promtool check rules "$work/dashboard-rules.yml" 2>&1); then
	printf '%s\n' "$out" >&2
	fail "a dashboard expr is not valid PromQL (dashboard:panel_<id>_<refId> above)"
fi
echo "monitoring-check: $panels dashboard panels, every query valid PromQL"
