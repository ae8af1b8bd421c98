#!/usr/bin/env bash
# setup.sh: install the Node packages of the contract tooling (redocly,
# ajv, yaml) into tools/node/node_modules exactly as package-lock.json pins
# them, when node_modules is missing or older than the lock. Run by ctest
# (contract/node_modules) before the tests that use them; quiet, and it
# prefers npm's cache to the network.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
# npm ci writes this file last, so it is newer than a lock it installed.
stamp=node_modules/.package-lock.json
if [ -f "$stamp" ] && [ "$stamp" -nt package-lock.json ]; then
	exit 0
fi
for tool in node npm; do
	command -v "$tool" >/dev/null 2>&1 ||
		{ echo "setup: $tool is missing (deploy/local/install.sh installs it)" >&2 && exit 1; }
done
echo "setup: npm ci in tools/node (node $(node --version), npm $(npm --version))"
npm ci --no-audit --no-fund --prefer-offline --loglevel=error
