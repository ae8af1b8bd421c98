#!/usr/bin/env node
// openapi-check.js: holds HTTP responses against the contract in api/openapi.yaml.
//
//   node tools/openapi-check.js [--spec FILE] LOG...   check the responses in LOG
//   node tools/openapi-check.js [--spec FILE] --self-test
//
// LOG holds one JSON object a line, as tests/integration/http_client.c writes
// them when ORDERS_TEST_RESPONSE_LOG is set: {program, method, path, query,
// status, headers: {lower-case name: value}, body | body_b64}. Each response
// is matched to its path template and method, and must be documented for its
// status; then its Content-Type, its documented headers (required ones
// present, each valid against its schema) and its body (valid against the
// response schema, OpenAPI 3.0 `nullable` included) are checked. A path the
// spec does not have, or a method its path does not take, is held against
// the spec's x-orders-fallback-responses (404, or 405 with an Allow that
// lists exactly the documented methods). HEAD is checked as GET without a
// body.
//
// Prints how many responses it checked per route and status, then every
// mismatch; exits 1 on any mismatch, on an unreadable log and when no
// response was checked at all. --self-test runs the checker on crafted
// responses, good and bad, and fails unless it accepts every good one and
// rejects every bad one (so that a broken checker cannot pass silently).
'use strict';

const fs = require('fs');
const path = require('path');
// The packages live in tools/node (npm ci there; see tools/node/setup.sh).
const nodeRequire = require('module').createRequire(path.join(__dirname, 'node', 'package.json'));
const Ajv = nodeRequire('ajv');
const addFormats = nodeRequire('ajv-formats');
const YAML = nodeRequire('yaml');

const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];
const SCHEMA_ID = 'urn:orders:openapi';

// ---- the spec ---------------------------------------------------------------

function loadSpec(file) {
	const spec = YAML.parse(fs.readFileSync(file, 'utf8'));
	if (!spec || typeof spec.openapi !== 'string' || !spec.openapi.startsWith('3.0.'))
		throw new Error(`${file}: not an OpenAPI 3.0 document`);
	return spec;
}

// The object a local $ref ("#/components/...") points at.
function pointer(spec, ref) {
	if (!ref.startsWith('#/'))
		throw new Error(`only local references are supported: ${ref}`);
	let node = spec;
	for (const raw of ref.slice(2).split('/')) {
		const key = raw.replace(/~1/g, '/').replace(/~0/g, '~');
		if (node === null || typeof node !== 'object' || !(key in node))
			throw new Error(`unresolvable reference ${ref}`);
		node = node[key];
	}
	return node;
}

// A response, header or parameter object, its $ref chain followed.
function deref(spec, obj) {
	for (let seen = 0; obj && obj.$ref; seen++) {
		if (seen > 20)
			throw new Error(`reference loop at ${obj.$ref}`);
		obj = pointer(spec, obj.$ref);
	}
	return obj;
}

// A copy of an OpenAPI schema that ajv compiles: references to
// components/schemas point into the schema registered as SCHEMA_ID.
function toJsonSchema(schema) {
	if (Array.isArray(schema))
		return schema.map(toJsonSchema);
	if (schema === null || typeof schema !== 'object')
		return schema;
	const out = {};
	for (const [k, v] of Object.entries(schema)) {
		if (k === '$ref' && typeof v === 'string') {
			const m = /^#\/components\/schemas\/(.+)$/.exec(v);
			if (!m)
				throw new Error(`a schema may only refer to components/schemas: ${v}`);
			out.$ref = `${SCHEMA_ID}#/definitions/${m[1]}`;
		} else if (k === 'example' || k.startsWith('x-')) {
			// Documentation only.
		} else {
			out[k] = toJsonSchema(v);
		}
	}
	return out;
}

class Checker {
	constructor(spec) {
		this.spec = spec;
		this.ajv = new Ajv({ strict: true, allErrors: true });
		addFormats(this.ajv);
		this.ajv.addSchema({
			$id: SCHEMA_ID,
			definitions: toJsonSchema((spec.components && spec.components.schemas) || {}),
		});
		this.validators = new Map();
		this.templates = Object.keys(spec.paths || {}).map((t) => ({
			template: t,
			segments: t.split('/'),
			literals: t.split('/').filter((s) => !/^\{.+\}$/.test(s)).length,
		}));
		// Literal paths win over templated ones (/v1/a/b over /v1/a/{x}).
		this.templates.sort((a, b) => b.literals - a.literals);
		this.counts = new Map();
		this.mismatches = [];
		this.checked = 0;
	}

	validator(key, schema) {
		let v = this.validators.get(key);
		if (!v) {
			v = this.ajv.compile(toJsonSchema(schema));
			this.validators.set(key, v);
		}
		return v;
	}

	// The path template that matches the raw path, or null. Like the server,
	// split on the literal slashes first and decode each segment after, so an
	// encoded slash (%2F) stays inside its segment.
	match(p) {
		const segs = p.split('/').map((s) => {
			try {
				return decodeURIComponent(s);
			} catch (e) {
				return s; // the server would not decode it either
			}
		});
		for (const t of this.templates) {
			if (t.segments.length !== segs.length)
				continue;
			if (t.segments.every((s, i) => /^\{.+\}$/.test(s) ? segs[i] !== '' : s === segs[i]))
				return t.template;
		}
		return null;
	}

	// Check one logged response; returns the problems found (strings).
	check(rec) {
		const problems = [];
		const fail = (msg) => problems.push(msg);
		const method = String(rec.method || '').toUpperCase();
		const status = String(rec.status);
		const headers = rec.headers || {};
		let label, responses, expectAllow = null;
		let headOnly = method === 'HEAD';
		const template = typeof rec.path === 'string' ? this.match(rec.path) : null;
		const fallback = this.spec['x-orders-fallback-responses'] || {};
		if (!template) {
			label = `${method} (unknown route)`;
			responses = fallback['unknown-route'] || {};
		} else {
			const item = this.spec.paths[template];
			let op = item[method.toLowerCase()];
			if (!op && method === 'HEAD')
				op = item.get;
			if (op) {
				label = `${method} ${template}`;
				responses = op.responses || {};
			} else {
				label = `${method} ${template} (not documented)`;
				responses = fallback['wrong-method'] || {};
				const allowed = METHODS.filter((m) => item[m]).map((m) => m.toUpperCase());
				if (allowed.includes('GET') && !allowed.includes('HEAD'))
					allowed.push('HEAD');
				expectAllow = allowed.sort();
			}
		}
		this.count(`${label} ${status}`);

		const resKey = responses[status] ? status : responses[`${status[0]}XX`] ? `${status[0]}XX` : 'default';
		const res = deref(this.spec, responses[resKey]);
		if (!res) {
			fail(`status ${status} is not documented for ${label}`);
			return problems;
		}
		const where = `${label} ${status}`;

		// The body first: a header may be required only with some error codes.
		const body = rec.body !== undefined ? rec.body
			: typeof rec.body_b64 === 'string' ? Buffer.from(rec.body_b64, 'base64').toString('latin1')
			: '';
		if (rec.body === undefined && typeof rec.body_b64 === 'string')
			fail('the body is not UTF-8');
		let json;
		const content = res.content || {};
		const media = Object.keys(content);
		if (media.length === 0) {
			if (body !== '')
				fail(`the response is documented without a body but has ${body.length} bytes`);
		} else {
			const ct = headers['content-type'];
			const base = ct ? ct.split(';')[0].trim().toLowerCase() : '';
			const key = media.find((m) => m.toLowerCase() === base) ||
				media.find((m) => m.endsWith('/*') && base.startsWith(m.slice(0, -1).toLowerCase())) ||
				media.find((m) => m === '*/*');
			if (!ct)
				fail(`no Content-Type (documented: ${media.join(', ')})`);
			else if (!key)
				fail(`Content-Type "${ct}" is not documented (documented: ${media.join(', ')})`);
			else if (!headOnly && content[key].schema) {
				let value = body;
				if (/^application\/([a-z0-9.+-]*\+)?json$/.test(base)) {
					try {
						value = JSON.parse(body);
						json = value;
					} catch (e) {
						fail(`the body is not JSON: ${e.message}`);
						value = undefined;
					}
				}
				if (value !== undefined) {
					const v = this.validator(`${where} ${key}`, content[key].schema);
					if (!v(value))
						for (const err of v.errors)
							fail(`body${err.instancePath || ''} ${err.message}${describeParams(err)}`);
				}
			}
		}
		const code = json && json.error && typeof json.error.code === 'string' ? json.error.code : null;

		for (const [name, raw] of Object.entries(res.headers || {})) {
			const h = deref(this.spec, raw);
			const lower = name.toLowerCase();
			if (lower === 'content-type')
				continue;
			const value = headers[lower];
			const withCodes = h['x-orders-required-with-codes'];
			const required = h.required === true || (Array.isArray(withCodes) && code !== null && withCodes.includes(code));
			if (value === undefined) {
				if (required)
					fail(`header ${name} is missing${code ? ` (code ${code})` : ''}`);
				continue;
			}
			if (h.schema) {
				const typed = coerce(value, h.schema);
				const v = this.validator(`${where} header ${lower}`, h.schema);
				if (typed === undefined)
					fail(`header ${name} "${value}" is not an ${h.schema.type}`);
				else if (!v(typed))
					for (const err of v.errors)
						fail(`header ${name} "${value}" ${err.message}${describeParams(err)}`);
			}
		}
		if (expectAllow && headers.allow !== undefined) {
			const got = headers.allow.split(',').map((m) => m.trim()).filter(Boolean).sort();
			if (got.join(',') !== expectAllow.join(','))
				fail(`Allow "${headers.allow}" differs from the documented methods ${expectAllow.join(', ')}`);
		}
		return problems;
	}

	count(key) {
		this.counts.set(key, (this.counts.get(key) || 0) + 1);
	}

	// Check one log line; mismatches are kept with where they came from.
	line(text, where) {
		let rec;
		try {
			rec = JSON.parse(text);
		} catch (e) {
			this.mismatches.push({ where, problems: [`not a JSON line: ${e.message}`] });
			return;
		}
		this.checked++;
		let problems;
		try {
			problems = this.check(rec);
		} catch (e) {
			problems = [`cannot check: ${e.message}`];
		}
		if (problems.length)
			this.mismatches.push({ where, rec, problems });
	}
}

// A header's text as the type its schema wants, or undefined.
function coerce(value, schema) {
	if (schema.type === 'integer')
		return /^-?[0-9]+$/.test(value) ? Number(value) : undefined;
	if (schema.type === 'number')
		return value.trim() !== '' && !isNaN(Number(value)) ? Number(value) : undefined;
	if (schema.type === 'boolean')
		return value === 'true' ? true : value === 'false' ? false : undefined;
	return value;
}

function describeParams(err) {
	if (err.keyword === 'additionalProperties')
		return ` ("${err.params.additionalProperty}")`;
	if (err.keyword === 'enum')
		return ` (${err.params.allowedValues.join(', ')})`;
	return '';
}

function excerpt(rec) {
	const body = rec.body !== undefined ? rec.body : rec.body_b64 ? `(base64) ${rec.body_b64}` : '';
	return body.length > 400 ? `${body.slice(0, 400)}…` : body;
}

function report(c) {
	const keys = [...c.counts.keys()].sort();
	console.log(`openapi-check: ${c.checked} response(s) checked`);
	for (const k of keys)
		console.log(`  ${String(c.counts.get(k)).padStart(6)}  ${k}`);
	for (const m of c.mismatches) {
		const r = m.rec;
		console.log(`MISMATCH ${m.where}` + (r ? `: ${r.program || '?'}: ${r.method} ${r.path}` +
			`${r.query ? `?${r.query}` : ''} -> ${r.status} (X-Request-Id ${(r.headers || {})['x-request-id'] || 'none'})` : ''));
		for (const p of m.problems)
			console.log(`    ${p}`);
		if (r)
			console.log(`    body: ${excerpt(r)}`);
	}
}

// ---- self-test ---------------------------------------------------------------

const UUID = '3f1c2b9a-5d4e-4f6a-8b7c-1d2e3f4a5b6c';
const RID = { 'x-request-id': 'rid-1' };
const JSON_HDR = { 'content-type': 'application/json', ...RID };

function rec(method, p, status, headers, body) {
	const q = p.indexOf('?');
	return {
		program: 'self-test', method, path: q < 0 ? p : p.slice(0, q), query: q < 0 ? '' : p.slice(q + 1),
		status, headers, body: typeof body === 'string' ? body : JSON.stringify(body),
	};
}

function err(code, field) {
	return { error: field ? { code, message: 'm', field } : { code, message: 'm' } };
}

const product = { sku: 'MUG-LOGO', name: 'Mug', price_cents: 1200, currency: 'USD', available: 3 };
const order = {
	order_id: UUID, status: 'confirmed', customer_id: 'c-42', currency: 'USD',
	items: [{ sku: 'MUG-LOGO', quantity: 2, unit_price_cents: 1200, line_total_cents: 2400 }],
	total_cents: 2400, payment: { token: 'tok_1', brand: 'visa', last4: '4242' },
	created_at: '2026-11-27T08:00:00.123Z', updated_at: '2026-11-27T08:00:01.000Z',
};
const cart = {
	cart_id: UUID, customer_id: 'c-42', currency: 'USD', status: 'open', items: [], total_cents: 0,
	created_at: '2026-11-27T08:00:00.123Z', updated_at: '2026-11-27T08:00:00.123Z',
	expires_at: '2026-12-04T08:00:00.123Z',
};
const event = {
	seq: 7, event_id: UUID, type: 'order.confirmed', order_id: UUID, customer_id: 'c-42', currency: 'USD',
	total_cents: 2400, items: [{ sku: 'MUG-LOGO', quantity: 2, unit_price_cents: 1200 }],
	occurred_at: '2026-11-27T08:00:00.123Z',
};
const CSV_HDR = { 'content-type': 'text/csv; charset=utf-8', 'x-next-after': '7', ...RID };
const CSV_HEAD = 'seq,event_id,type,order_id,customer_id,currency,total_cents,items,occurred_at\r\n';
const CSV_ROW = `7,${UUID},order.confirmed,${UUID},"c,""42""",USD,2400,` +
	'"[{""sku"":""MUG-LOGO"",""quantity"":2,""unit_price_cents"":1200}]",2026-11-27T08:00:00.123Z\r\n';
const reconciliation = {
	date: '2026-11-27', last_seq: 7, currencies: [{ currency: 'USD', confirmed_count: 1,
		confirmed_total_cents: 2400, rejected_count: 0, payment_failed_count: 0, expired_count: 0 }],
};

const GOOD = [
	rec('GET', '/healthz', 200, JSON_HDR, { status: 'ok' }),
	rec('HEAD', '/healthz', 200, JSON_HDR, ''),
	rec('GET', '/readyz', 503, JSON_HDR, { status: 'not_ready', failing: 'redis' }),
	rec('GET', '/metrics', 200, { 'content-type': 'text/plain; version=0.0.4', ...RID }, '# HELP x\nx 1\n'),
	rec('GET', '/v1/products?limit=1', 200, JSON_HDR, { products: [product], next_after: 'MUG-LOGO' }),
	rec('GET', '/v1/products', 200, JSON_HDR, { products: [], next_after: null }),
	rec('GET', '/v1/products/MUG-LOGO', 200, JSON_HDR, product),
	rec('PUT', '/v1/products/X1', 201, JSON_HDR, { ...product, sku: 'X1', stock: 5 }),
	rec('PUT', '/v1/products/a%20b', 422, JSON_HDR, err('validation_error', 'sku')),
	rec('POST', '/v1/checkouts', 202, { ...JSON_HDR, location: `/v1/orders/${UUID}` },
		{ order_id: UUID, status: 'pending', status_url: `/v1/orders/${UUID}` }),
	rec('POST', '/v1/checkouts', 409, { ...JSON_HDR, 'retry-after': '1' }, err('idempotency_key_in_use')),
	rec('POST', '/v1/checkouts', 409, JSON_HDR, err('cart_checked_out')),
	rec('POST', '/v1/checkouts', 503, { ...JSON_HDR, 'retry-after': '1' }, err('unavailable')),
	rec('GET', `/v1/orders/${UUID}`, 200, JSON_HDR, order),
	rec('POST', '/v1/carts', 201, { ...JSON_HDR, location: `/v1/carts/${UUID}` }, cart),
	rec('DELETE', `/v1/carts/${UUID}`, 204, RID, ''),
	rec('DELETE', '/v1/checkouts', 405, { ...JSON_HDR, allow: 'POST' }, err('method_not_allowed')),
	rec('POST', '/v1/products', 405, { ...JSON_HDR, allow: 'GET, HEAD' }, err('method_not_allowed')),
	rec('GET', '/v1/nothing-here', 404, JSON_HDR, err('not_found')),
	rec('GET', '/v1/products/', 404, JSON_HDR, err('not_found')),
	rec('GET', '/v1/order-events?limit=1', 200, { ...JSON_HDR, 'x-next-after': '7' }, { events: [event], next_after: 7 }),
	rec('GET', '/v1/order-events', 200, CSV_HDR, CSV_HEAD + CSV_ROW),
	rec('GET', '/v1/reconciliation?date=2026-11-27', 200, JSON_HDR, reconciliation),
];

// Each breaks the contract in one way the checker must see.
const BAD = [
	['an undocumented status', rec('GET', '/healthz', 418, JSON_HDR, { status: 'ok' })],
	['no X-Request-Id', rec('GET', '/healthz', 200, { 'content-type': 'application/json' }, { status: 'ok' })],
	['an X-Request-Id too long', rec('GET', '/healthz', 200, { ...JSON_HDR, 'x-request-id': 'r'.repeat(65) }, { status: 'ok' })],
	['another content type', rec('GET', '/healthz', 200, { 'content-type': 'text/html', ...RID }, { status: 'ok' })],
	['no content type', rec('GET', '/healthz', 200, RID, { status: 'ok' })],
	['a body that is not JSON', rec('GET', '/healthz', 200, JSON_HDR, 'ok')],
	['an unknown member', rec('GET', '/v1/products/MUG-LOGO', 200, JSON_HDR, { ...product, stock: 3 })],
	['a missing member', rec('GET', '/v1/products/MUG-LOGO', 200, JSON_HDR, { ...product, available: undefined })],
	['a string for an integer', rec('GET', '/v1/products/MUG-LOGO', 200, JSON_HDR, { ...product, price_cents: '1200' })],
	['next_after missing', rec('GET', '/v1/products', 200, JSON_HDR, { products: [] })],
	['next_after a number', rec('GET', '/v1/products', 200, JSON_HDR, { products: [], next_after: 7 })],
	['a malformed uuid', rec('GET', `/v1/orders/${UUID}`, 200, JSON_HDR, { ...order, order_id: 'not-a-uuid' })],
	['an invalid date-time', rec('GET', `/v1/orders/${UUID}`, 200, JSON_HDR, { ...order, created_at: '2026-13-40T99:00:00Z' })],
	['an unknown status', rec('GET', `/v1/orders/${UUID}`, 200, JSON_HDR, { ...order, status: 'shipped' })],
	['a wrong error code', rec('GET', '/v1/products/MUG-LOGO', 401, JSON_HDR, err('forbidden'))],
	['an error with an extra member', rec('GET', '/v1/products/NOPE', 404, JSON_HDR,
		{ error: { code: 'product_not_found', message: 'm', sku: 'NOPE' } })],
	['validation_error without field', rec('GET', '/v1/products?limit=0', 422, JSON_HDR, err('validation_error'))],
	['429 without Retry-After', rec('GET', '/v1/products', 429, JSON_HDR, err('rate_limited'))],
	['503 with a Retry-After that is not a number', rec('POST', '/v1/checkouts', 503,
		{ ...JSON_HDR, 'retry-after': 'soon' }, err('unavailable'))],
	['idempotency_key_in_use without Retry-After', rec('POST', '/v1/checkouts', 409, JSON_HDR, err('idempotency_key_in_use'))],
	['202 without Location', rec('POST', '/v1/checkouts', 202, JSON_HDR,
		{ order_id: UUID, status: 'pending', status_url: `/v1/orders/${UUID}` })],
	['201 cart without Location', rec('POST', '/v1/carts', 201, JSON_HDR, cart)],
	['204 with a body', rec('DELETE', `/v1/carts/${UUID}`, 204, JSON_HDR, '{}')],
	['405 for a documented method', rec('GET', '/healthz', 405, { ...JSON_HDR, allow: 'GET, HEAD' }, err('method_not_allowed'))],
	['405 without Allow', rec('DELETE', '/v1/checkouts', 405, JSON_HDR, err('method_not_allowed'))],
	['405 with a wrong Allow', rec('DELETE', '/v1/checkouts', 405, { ...JSON_HDR, allow: 'GET, POST' }, err('method_not_allowed'))],
	['an unknown route answered 200', rec('GET', '/v1/nothing-here', 200, JSON_HDR, { status: 'ok' })],
	['a documented route answered not_found', rec('POST', '/v1/carts', 404, JSON_HDR, err('not_found'))],
	['an event page without X-Next-After', rec('GET', '/v1/order-events', 200, JSON_HDR, { events: [event], next_after: 7 })],
	['an event without seq', rec('GET', '/v1/order-events', 200, { ...JSON_HDR, 'x-next-after': '7' },
		{ events: [{ ...event, seq: undefined }], next_after: 7 })],
	['a CSV page without its header row', rec('GET', '/v1/order-events', 200, CSV_HDR, CSV_ROW)],
	['a CSV field with a bare quote', rec('GET', '/v1/order-events', 200, CSV_HDR,
		CSV_HEAD + CSV_ROW.replace('"c,""42"""', 'c"42'))],
	['a CSV line ending in LF only', rec('GET', '/v1/order-events', 200, CSV_HDR, CSV_HEAD + CSV_ROW.replace('\r\n', '\n'))],
	['reconciliation with a float', rec('GET', '/v1/reconciliation', 200, JSON_HDR,
		{ ...reconciliation, last_seq: 7.5 })],
	['a body that is not UTF-8', { ...rec('GET', '/healthz', 200, JSON_HDR, ''), body: undefined, body_b64: '/w==' }],
];

function selfTest(spec, specFile) {
	let failed = 0;
	for (const r of GOOD) {
		const problems = new Checker(spec).check(r);
		if (problems.length) {
			failed++;
			console.log(`SELF-TEST FAIL: a good ${r.method} ${r.path} ${r.status} was rejected: ${problems.join('; ')}`);
		}
	}
	for (const [what, r] of BAD) {
		const problems = new Checker(spec).check(r);
		if (problems.length === 0) {
			failed++;
			console.log(`SELF-TEST FAIL: ${what} (${r.method} ${r.path} ${r.status}) was accepted`);
		} else {
			console.log(`ok: ${what}: ${problems[0]}`);
		}
	}
	// Whole logs, as the ctest reads them: all good passes; one planted bad
	// line among good ones, a line that is not JSON, or no line at all fails.
	const dir = fs.mkdtempSync(path.join(require('os').tmpdir(), 'openapi-check-'));
	const logs = [
		['the good responses', GOOD, 0],
		['one bad response among good ones', [...GOOD, BAD[6][1], ...GOOD], 1],
		['a line that is not JSON', [...GOOD, '{"method":'], 1],
		['an empty log', [], 1],
	];
	try {
		for (const [what, lines, want] of logs) {
			const file = path.join(dir, 'responses.jsonl');
			fs.writeFileSync(file, lines.map((l) => typeof l === 'string' ? l : JSON.stringify(l)).join('\n') + '\n');
			const c = checkLogs(spec, [file]);
			const got = verdict(c, specFile, false);
			if (got !== want) {
				failed++;
				console.log(`SELF-TEST FAIL: ${what}: exit ${got}, expected ${want}`);
			} else {
				console.log(`ok: ${what}: exit ${got}`);
			}
		}
	} finally {
		fs.rmSync(dir, { recursive: true, force: true });
	}
	const total = GOOD.length + BAD.length + logs.length;
	console.log(`${total - failed} passed, ${failed} failed`);
	return failed === 0;
}

// ---- main ----------------------------------------------------------------------

function main(argv) {
	let specFile = path.join(__dirname, '..', 'api', 'openapi.yaml');
	let self = false;
	const logs = [];
	for (let i = 0; i < argv.length; i++) {
		if (argv[i] === '--spec' && i + 1 < argv.length)
			specFile = argv[++i];
		else if (argv[i] === '--self-test')
			self = true;
		else if (argv[i].startsWith('-'))
			throw new Error(`usage: openapi-check.js [--spec FILE] (--self-test | LOG...)`);
		else
			logs.push(argv[i]);
	}
	const spec = loadSpec(specFile);
	if (self)
		return selfTest(spec, specFile) ? 0 : 1;
	if (logs.length === 0)
		throw new Error('usage: openapi-check.js [--spec FILE] (--self-test | LOG...)');

	const c = checkLogs(spec, logs);
	report(c);
	return verdict(c, specFile, true);
}

// Every line of the logs, checked.
function checkLogs(spec, logs) {
	const c = new Checker(spec);
	for (const log of logs) {
		const lines = fs.readFileSync(log, 'utf8').split('\n');
		lines.forEach((text, i) => {
			if (text.trim() !== '')
				c.line(text, `${log}:${i + 1}`);
		});
	}
	return c;
}

// The exit status for what c found: 1 on a mismatch or when nothing was checked.
function verdict(c, specFile, say) {
	const out = say ? console.log : () => {};
	if (c.checked === 0 && c.mismatches.length === 0) {
		out('openapi-check: FAIL: no response to check (was ORDERS_TEST_RESPONSE_LOG set for the tests?)');
		return 1;
	}
	if (c.mismatches.length) {
		out(`openapi-check: FAIL: ${c.mismatches.length} of ${c.checked} response(s) do not match ${specFile}`);
		return 1;
	}
	out(`openapi-check: every response matches ${specFile}`);
	return 0;
}

try {
	process.exitCode = main(process.argv.slice(2));
} catch (e) {
	console.error(`openapi-check: ${e.message}`);
	process.exitCode = 2;
}
