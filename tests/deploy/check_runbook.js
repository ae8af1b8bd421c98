#!/usr/bin/env node
// check_runbook.js: every runbook link of the alerts leads to a section of
// deploy/README.md.
//
//   node tests/deploy/check_runbook.js               check the repository
//   node tests/deploy/check_runbook.js --self-test   and prove it can fail
//
// The links are the runbook_url annotations of deploy/monitoring/alerts.yml
// ("deploy/README.md#queue-backlog") and the "Runbook: ...#anchor" of the
// CloudWatch alarm descriptions in deploy/terraform. Each anchor must be the
// GitHub anchor of a heading of deploy/README.md (lower case, punctuation
// dropped, spaces as dashes, "-1", "-2" for repeats); headings inside code
// blocks do not count. Exit status: 0 every anchor found, 1 otherwise.
'use strict';

const fs = require('fs');
const path = require('path');

const REPO = path.resolve(__dirname, '..', '..');

// The anchors GitHub gives the headings of a Markdown text.
function headingAnchors(markdown) {
	const anchors = new Set();
	const seen = new Map();
	let fence = null;
	for (const line of markdown.split('\n')) {
		const f = line.match(/^\s*(```|~~~)/);
		if (f) {
			fence = fence === null ? f[1] : (fence === f[1] ? null : fence);
			continue;
		}
		if (fence !== null)
			continue;
		const h = line.match(/^#{1,6}\s+(.*?)\s*#*\s*$/);
		if (!h)
			continue;
		const base = h[1].toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/\s/g, '-');
		const n = seen.get(base) || 0;
		seen.set(base, n + 1);
		anchors.add(n ? `${base}-${n}` : base);
	}
	return anchors;
}

// [{anchor, from}] of the alert rules' runbook_url annotations.
function alertAnchors(yaml, from) {
	return [...yaml.matchAll(/runbook_url:\s*["']?deploy\/README\.md#([A-Za-z0-9_-]+)/g)]
		.map((m) => ({ anchor: m[1], from }));
}

// [{anchor, from}] of the CloudWatch alarm descriptions.
function terraformAnchors(tf, from) {
	return [...tf.matchAll(/Runbook: \$\{local\.runbook\}#([A-Za-z0-9_-]+)/g)].map((m) => ({ anchor: m[1], from }));
}

function listTf(dir) {
	if (!fs.existsSync(dir))
		return [];
	return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
		const p = path.join(dir, e.name);
		return e.isDirectory() ? listTf(p) : (e.name.endsWith('.tf') ? [p] : []);
	});
}

// Problems of one README against a list of links.
function check(readme, links) {
	const have = headingAnchors(readme);
	return links.filter((l) => !have.has(l.anchor))
		.map((l) => `${l.from}: #${l.anchor} is not a heading of deploy/README.md`);
}

function selfTest() {
	const links = [{ anchor: 'queue-backlog', from: 'a' }, { anchor: 'dead-letters', from: 'b' },
		{ anchor: 'http-errors', from: 'c' }, { anchor: 'stuck-consumer-1', from: 'd' }];
	const cases = [
		['every heading present', '# Deploy\n## Queue backlog\n### Dead letters\n### HTTP errors\n' +
			'## Stuck consumer\n## Stuck consumer\n', 0],
		['a heading missing', '## Queue backlog\n### HTTP errors\n## Stuck consumer\n## Stuck consumer\n', 1],
		['a heading only inside a code block', '## Queue backlog\n```sh\n# Dead letters\n```\n' +
			'### HTTP errors\n## Stuck consumer\n## Stuck consumer\n', 1],
		['punctuation and case', '## Queue backlog!\n### Dead `letters`\n### HTTP errors\n' +
			'## Stuck consumer\n## Stuck consumer\n', 0],
		['a repeat anchor missing', '## Queue backlog\n### Dead letters\n### HTTP errors\n## Stuck consumer\n', 1],
	];
	let failed = 0;
	for (const [name, readme, want] of cases) {
		const got = check(readme, links).length;
		const ok = want === 0 ? got === 0 : got > 0;
		if (!ok)
			failed++;
		console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}: ${got} missing`);
	}
	const yaml = '        annotations:\n          runbook_url: "deploy/README.md#no-consumers"\n';
	if (alertAnchors(yaml, 'x').map((l) => l.anchor).join() !== 'no-consumers') {
		failed++;
		console.log('FAIL the runbook_url of an alert rule is not read');
	}
	const tf = 'alarm_description = "x. Runbook: ${local.runbook}#queue-backlog"';
	if (terraformAnchors(tf, 'x').map((l) => l.anchor).join() !== 'queue-backlog') {
		failed++;
		console.log('FAIL the runbook link of an alarm description is not read');
	}
	return failed;
}

function main() {
	let failed = process.argv[2] === '--self-test' ? selfTest() : 0;
	const alerts = path.join(REPO, 'deploy', 'monitoring', 'alerts.yml');
	const links = alertAnchors(fs.readFileSync(alerts, 'utf8'), 'deploy/monitoring/alerts.yml');
	if (!links.length) {
		failed++;
		console.log('FAIL deploy/monitoring/alerts.yml: no runbook_url found');
	}
	for (const f of listTf(path.join(REPO, 'deploy', 'terraform')))
		links.push(...terraformAnchors(fs.readFileSync(f, 'utf8'), path.relative(REPO, f)));
	const readme = fs.readFileSync(path.join(REPO, 'deploy', 'README.md'), 'utf8');
	const problems = check(readme, links);
	problems.forEach((p) => console.log(`FAIL ${p}`));
	failed += problems.length;
	const anchors = new Set(links.map((l) => l.anchor));
	const have = headingAnchors(readme);
	const missing = [...anchors].filter((a) => !have.has(a)).length;
	console.log(`runbook-check: ${links.length} links to ${anchors.size} sections, ${missing} missing`);
	return failed === 0;
}

process.exit(main() ? 0 : 1);
