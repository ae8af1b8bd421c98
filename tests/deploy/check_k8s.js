#!/usr/bin/env node
// check_k8s.js: builds deploy/k8s's overlays offline and holds every object to its schema
// and to the properties the system needs (run by ctest through tests/deploy/check.sh).
//
//   node tests/deploy/check_k8s.js               check overlays/dev and overlays/prod
//   node tests/deploy/check_k8s.js --self-test   plant violations; each must be caught
//
// For each overlay:
//   1. build it with kustomize.js (and compare with `kubectl kustomize` where kubectl is
//      installed: the two must agree object for object);
//   2. validate every object with the kubernetes-models packages (types, formats,
//      required fields), and type-check all of them with TypeScript against the same
//      models, which refuses unknown fields (a misspelt readinessProbe would otherwise
//      pass as an unknown, ignored field);
//   3. assert the properties below (rules()): probes, resources, restricted security
//      contexts, zone spread and preStop on every workload, an autoscaler per Deployment
//      (KEDA counting unacknowledged messages for the consumers), a PDB each, default-deny
//      network policies with exactly the allows the daemons need, secrets only by
//      reference, and no Secret with data anywhere in the repository.
// Exits 1 on any problem. --self-test also checks the builder on small cases.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const { execFileSync, spawnSync } = require('child_process');
const kustomize = require('./kustomize');

const ROOT = path.resolve(__dirname, '..', '..');
const NODE_DIR = path.join(ROOT, 'tools', 'node');
const nodeRequire = require('module').createRequire(path.join(NODE_DIR, 'package.json'));
const YAML = nodeRequire('yaml');
const OVERLAYS = ['dev', 'prod'];

// The daemons and what each consumer consumes (lib/mq.h, consumers/*/).
const API = 'orders-api';
const CONSUMERS = {
	'orders-inventory': 'inventory.reserve',
	'orders-payment': 'payment.authorize',
	'orders-order': 'order.finalize',
	'orders-cart': 'cart.persist',
};
const DAEMONS = [API, ...Object.keys(CONSUMERS)];
// Kept out of ConfigMaps: they are read from Secrets only.
const SECRET_VARS = ['ORDERS_PG_DSN', 'ORDERS_AMQP_URL', 'ORDERS_REDIS_URL', 'ORDERS_API_KEYS',
	'ORDERS_SEAL_SECRET_KEY', 'ORDERS_VAULT_KEY', 'ORDERS_FINGERPRINT_KEY', 'ORDERS_ORDER_ID_KEY'];

// ---- the models -----------------------------------------------------------------------

// The module of a kind's model, by apiVersion.
function modelModule(o) {
	const [grp, version] = o.apiVersion.includes('/') ? o.apiVersion.split('/') : ['', o.apiVersion];
	if (grp === '')
		return `kubernetes-models/${version}/${o.kind}`;
	if (grp === 'keda.sh')
		return `@kubernetes-models/keda/keda.sh/${version}/${o.kind}`;
	if (grp === 'external-secrets.io')
		return `@kubernetes-models/external-secrets/external-secrets.io/${version}/${o.kind}`;
	return `kubernetes-models/${grp}/${version}/${o.kind}`;
}

// Validation by the models' JSON schemas: a list of problems.
function validateSchemas(objects) {
	const problems = [];
	for (const o of objects) {
		const id = kustomize.objectId(o);
		let Model;
		try {
			Model = nodeRequire(modelModule(o))[o.kind];
		} catch (e) {
			Model = undefined;
		}
		if (!Model) {
			problems.push(`${id}: no schema for ${o.apiVersion} ${o.kind}`);
			continue;
		}
		try {
			new Model(o).validate();
		} catch (e) {
			problems.push(`${id}: schema: ${e.message}`);
		}
	}
	return problems;
}

// TypeScript's excess-property check against the models' types: unknown fields anywhere.
// One object a line, so that an error's line names its object.
function typeCheck(objects) {
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'check-k8s-'));
	try {
		const lines = [];
		const imports = new Map();
		for (const o of objects) {
			const mod = modelModule(o);
			if (!imports.has(mod))
				imports.set(mod, `T${imports.size}`);
		}
		for (const [mod, alias] of imports)
			lines.push(`import { I${mod.split('/').pop()} as ${alias} } from ${JSON.stringify(mod)};`);
		const first = lines.length + 1;
		objects.forEach((o, i) => {
			lines.push(`export const o${i}: ${imports.get(modelModule(o))} = ${JSON.stringify(o)};`);
		});
		fs.writeFileSync(path.join(dir, 'objects.ts'), lines.join('\n') + '\n');
		fs.writeFileSync(path.join(dir, 'tsconfig.json'), JSON.stringify({
			compilerOptions: {
				noEmit: true, strict: true, skipLibCheck: true, moduleResolution: 'node',
				types: [], baseUrl: path.join(NODE_DIR, 'node_modules'),
			},
			files: ['objects.ts'],
		}));
		const tsc = path.join(NODE_DIR, 'node_modules', 'typescript', 'bin', 'tsc');
		const r = spawnSync(process.execPath, [tsc, '-p', dir], { encoding: 'utf8' });
		if (r.status === 0)
			return [];
		const problems = [];
		for (const line of (r.stdout + r.stderr).split('\n')) {
			const m = /objects\.ts\((\d+),\d+\): error (TS\d+: .*)/.exec(line);
			if (m) {
				const o = objects[Number(m[1]) - first];
				problems.push(`${o ? kustomize.objectId(o) : 'imports'}: type: ${m[2]}`);
			} else if (line.trim()) {
				problems.push(`tsc: ${line.trim()}`);
			}
		}
		return problems.length ? problems : [`tsc failed (status ${r.status})`];
	} finally {
		fs.rmSync(dir, { recursive: true, force: true });
	}
}

// ---- helpers for the rules ---------------------------------------------------------------

function byKind(objects, kind) {
	return objects.filter((o) => o.kind === kind);
}

function named(objects, kind, name) {
	return objects.find((o) => o.kind === kind && o.metadata.name === name);
}

function selects(selector, labels) {
	if (!selector)
		return false;
	for (const [k, v] of Object.entries(selector.matchLabels || {})) {
		if (labels[k] !== v)
			return false;
	}
	for (const e of selector.matchExpressions || []) {
		const has = Object.hasOwn(labels, e.key);
		const ok = {
			In: has && e.values.includes(labels[e.key]),
			NotIn: !has || !e.values.includes(labels[e.key]),
			Exists: has,
			DoesNotExist: !has,
		}[e.operator];
		if (!ok)
			return false;
	}
	return true;
}

// A CPU or memory quantity in base units (cores, bytes).
function quantity(q) {
	const m = /^([0-9.]+)(m|k|Ki|M|Mi|G|Gi|T|Ti)?$/.exec(String(q));
	if (!m)
		return NaN;
	const mult = { m: 1e-3, k: 1e3, Ki: 1024, M: 1e6, Mi: 1024 ** 2, G: 1e9, Gi: 1024 ** 3,
		T: 1e12, Ti: 1024 ** 4 }[m[2]] || 1;
	return Number(m[1]) * mult;
}

// The value of an environment variable in a container: env first, then envFrom ConfigMaps.
function envValue(objects, c, name) {
	const e = (c.env || []).find((v) => v.name === name);
	if (e)
		return e.value;
	for (const from of c.envFrom || []) {
		const cm = from.configMapRef && named(objects, 'ConfigMap', from.configMapRef.name);
		if (cm && cm.data && Object.hasOwn(cm.data, name))
			return cm.data[name];
	}
	return undefined;
}

// The container port a probe's port (a name or a number) stands for.
function probePort(c, probe) {
	const port = probe && probe.httpGet && probe.httpGet.port;
	if (typeof port === 'number')
		return (c.ports || []).some((p) => p.containerPort === port) ? port : undefined;
	const p = (c.ports || []).find((x) => x.name === port);
	return p && p.containerPort;
}

function preStopSeconds(c) {
	const ps = c.lifecycle && c.lifecycle.preStop;
	if (!ps)
		return undefined;
	if (ps.sleep && typeof ps.sleep.seconds === 'number')
		return ps.sleep.seconds;
	const cmd = ps.exec && ps.exec.command;
	if (Array.isArray(cmd) && cmd.length === 2 && cmd[0] === 'sleep' && /^\d+$/.test(cmd[1]))
		return Number(cmd[1]);
	return 0;
}

// Secrets the ExternalSecrets make: name -> the keys each holds.
function externalSecretKeys(objects) {
	const out = new Map();
	for (const es of byKind(objects, 'ExternalSecret')) {
		const target = (es.spec.target && es.spec.target.name) || es.metadata.name;
		const tmpl = es.spec.target && es.spec.target.template && es.spec.target.template.data;
		const keys = tmpl ? Object.keys(tmpl) : (es.spec.data || []).map((d) => d.secretKey);
		out.set(target, new Set(keys));
	}
	return out;
}

// ---- the rules ---------------------------------------------------------------------------

// The pod-level checks every workload (Deployment or Job) must pass.
function checkPod(objects, id, tmpl, problems) {
	const spec = tmpl.spec || {};
	const psc = spec.securityContext || {};
	const say = (m) => problems.push(`${id}: ${m}`);
	if (psc.runAsNonRoot !== true)
		say('pod securityContext.runAsNonRoot is not true');
	if (psc.runAsUser === 0)
		say('pod runs as uid 0');
	if (spec.hostNetwork || spec.hostPID || spec.hostIPC)
		say('pod uses the host namespaces');
	if (spec.automountServiceAccountToken !== false)
		say('pod automountServiceAccountToken is not false');
	const sa = named(objects, 'ServiceAccount', spec.serviceAccountName);
	if (!spec.serviceAccountName || !sa)
		say(`service account "${spec.serviceAccountName}" is not defined`);
	else if (sa.automountServiceAccountToken !== false)
		say(`service account ${sa.metadata.name} mounts its token`);
	const secrets = externalSecretKeys(objects);
	for (const c of [...(spec.initContainers || []), ...(spec.containers || [])]) {
		const cid = `container ${c.name}`;
		const sc = c.securityContext || {};
		const seccomp = (sc.seccompProfile || psc.seccompProfile || {}).type;
		if (seccomp !== 'RuntimeDefault' && seccomp !== 'Localhost')
			say(`${cid}: seccompProfile is not RuntimeDefault`);
		if (sc.allowPrivilegeEscalation !== false)
			say(`${cid}: allowPrivilegeEscalation is not false`);
		if (sc.readOnlyRootFilesystem !== true)
			say(`${cid}: readOnlyRootFilesystem is not true`);
		if (sc.privileged)
			say(`${cid}: privileged`);
		if (!(sc.capabilities && (sc.capabilities.drop || []).includes('ALL')))
			say(`${cid}: capabilities do not drop ALL`);
		if (sc.capabilities && (sc.capabilities.add || []).length)
			say(`${cid}: adds capabilities`);
		if (sc.runAsNonRoot === false || sc.runAsUser === 0)
			say(`${cid}: may run as root`);
		const res = c.resources || {};
		for (const kind of ['requests', 'limits']) {
			for (const r of ['cpu', 'memory']) {
				if (!(res[kind] && res[kind][r] !== undefined))
					say(`${cid}: no resources.${kind}.${r}`);
			}
		}
		for (const r of ['cpu', 'memory']) {
			if (res.requests && res.limits && quantity(res.requests[r]) > quantity(res.limits[r]))
				say(`${cid}: ${r} request above its limit`);
		}
		if (typeof c.image !== 'string' || /:latest$/.test(c.image) || !/[:@]/.test(c.image))
			say(`${cid}: image "${c.image}" has no fixed tag`);
		for (const from of c.envFrom || []) {
			// PCI-DSS 3.5: only payment-consumer opens sealed cards and the vault.
			if (from.secretRef && from.secretRef.name === 'orders-card-keys' &&
			    c.name !== 'orders-payment')
				say(`${cid}: holds the card keys (only orders-payment may)`);
			if (from.configMapRef && !named(objects, 'ConfigMap', from.configMapRef.name))
				say(`${cid}: ConfigMap ${from.configMapRef.name} is not defined`);
			if (from.secretRef && !secrets.has(from.secretRef.name))
				say(`${cid}: Secret ${from.secretRef.name} comes from no ExternalSecret`);
		}
		for (const e of c.env || []) {
			const ref = e.valueFrom && e.valueFrom.secretKeyRef;
			if (ref && !(secrets.has(ref.name) && secrets.get(ref.name).has(ref.key)))
				say(`${cid}: ${e.name} refers to ${ref.name}/${ref.key}, which no ExternalSecret makes`);
			if (SECRET_VARS.includes(e.name) && e.value !== undefined)
				say(`${cid}: ${e.name} is given in clear`);
		}
		// A read-only root: whatever writes needs a volume, and /tmp is where it would.
		const tmp = (c.volumeMounts || []).find((m) => m.mountPath === '/tmp');
		if (!tmp || !(spec.volumes || []).some((v) => v.name === tmp.name && v.emptyDir))
			say(`${cid}: no writable /tmp (emptyDir) under the read-only root`);
	}
}

function checkDeployment(objects, d, problems) {
	const id = kustomize.objectId(d);
	const say = (m) => problems.push(`${id}: ${m}`);
	const name = d.metadata.name;
	const tmpl = d.spec.template;
	const labels = tmpl.metadata.labels || {};
	const spec = tmpl.spec;
	if (!selects(d.spec.selector, labels))
		say('the selector does not select its own pods');
	checkPod(objects, id, tmpl, problems);
	if (d.spec.replicas !== undefined)
		say('sets spec.replicas although an autoscaler owns the count');
	const c = (spec.containers || []).find((x) => x.name === name);
	if (!c || (spec.containers || []).length !== 1) {
		say(`expected one container named ${name}`);
		return;
	}
	if (!Array.isArray(c.command) || c.command[0] !== name)
		say(`the container does not run ${name}`);
	// The port the daemon listens on: the API's HTTP port, a consumer's ops port.
	const want = name === API ? envValue(objects, c, 'ORDERS_HTTP_PORT') :
		envValue(objects, c, 'ORDERS_METRICS_PORT');
	if (want === undefined)
		say(name === API ? 'ORDERS_HTTP_PORT is not set' : 'ORDERS_METRICS_PORT is not set');
	if (envValue(objects, c, 'ORDERS_HTTP_BIND') !== '0.0.0.0')
		say('ORDERS_HTTP_BIND is not 0.0.0.0: the probes could not reach it');
	for (const [probe, p] of [['readinessProbe', '/readyz'], ['livenessProbe', '/healthz']]) {
		const pr = c[probe];
		if (!pr || !pr.httpGet || pr.httpGet.path !== p) {
			say(`${probe} is not an HTTP GET of ${p}`);
			continue;
		}
		const port = probePort(c, pr);
		if (port === undefined || String(port) !== String(want))
			say(`${probe} port ${pr.httpGet.port} is not the daemon's port ${want}`);
	}
	const stop = preStopSeconds(c);
	if (stop === undefined)
		say('no preStop hook');
	// The grace period covers preStop and the publisher confirm of the work in hand.
	const confirm = Number(envValue(objects, c, 'ORDERS_PUBLISH_TIMEOUT_MS') || 5000) / 1000;
	const grace = spec.terminationGracePeriodSeconds;
	if (typeof grace !== 'number' || grace < (stop || 0) + confirm + 5)
		say(`terminationGracePeriodSeconds ${grace} does not cover preStop ${stop} s + ` +
			`the ${confirm} s confirm timeout + 5 s`);
	const tsc = spec.topologySpreadConstraints || [];
	for (const key of ['topology.kubernetes.io/zone', 'kubernetes.io/hostname']) {
		const t = tsc.find((x) => x.topologyKey === key);
		if (!t)
			say(`no topology spread over ${key}`);
		else if (!selects(t.labelSelector, labels))
			say(`the topology spread over ${key} does not select its pods`);
		else if (key === 'topology.kubernetes.io/zone' && t.whenUnsatisfiable !== 'DoNotSchedule')
			say('the zone spread is not enforced (whenUnsatisfiable: DoNotSchedule)');
	}
	const pdbs = byKind(objects, 'PodDisruptionBudget').filter((p) => selects(p.spec.selector, labels));
	if (pdbs.length !== 1)
		say(`${pdbs.length} PodDisruptionBudgets select its pods (want 1)`);
	else if (pdbs[0].spec.maxUnavailable === undefined && pdbs[0].spec.minAvailable === undefined)
		say('its PodDisruptionBudget sets neither maxUnavailable nor minAvailable');
	const svc = byKind(objects, 'Service').find((s) => s.metadata.name === name);
	if (!svc || !selects({ matchLabels: svc.spec.selector }, labels))
		say(`no Service ${name} selecting its pods`);
	if (name === API)
		checkApi(objects, d, c, problems);
	else
		checkConsumer(objects, d, c, problems);
}

function checkApi(objects, d, c, problems) {
	const id = kustomize.objectId(d);
	const say = (m) => problems.push(`${id}: ${m}`);
	const hpa = byKind(objects, 'HorizontalPodAutoscaler').find((h) =>
		h.spec.scaleTargetRef.kind === 'Deployment' && h.spec.scaleTargetRef.name === API);
	if (!hpa) {
		say('no HorizontalPodAutoscaler');
	} else {
		if (hpa.apiVersion !== 'autoscaling/v2')
			say(`the HPA is ${hpa.apiVersion}, not autoscaling/v2`);
		if (!(hpa.spec.metrics || []).some((m) => m.type === 'Resource' && m.resource.name === 'cpu'))
			say('the HPA does not scale on CPU');
		if (!(hpa.spec.minReplicas >= 1 && hpa.spec.maxReplicas >= hpa.spec.minReplicas))
			say('the HPA replica bounds are wrong');
	}
	const ings = byKind(objects, 'Ingress');
	if (ings.length !== 1) {
		say(`${ings.length} Ingresses (want 1)`);
		return;
	}
	const ing = ings[0];
	if (ing.spec.ingressClassName !== 'alb')
		say('the Ingress is not of class alb');
	for (const rule of ing.spec.rules || []) {
		for (const p of (rule.http && rule.http.paths) || []) {
			if (!/^\/v1(\/|$)/.test(p.path))
				say(`the Ingress exposes ${p.path}: only /v1 may be public (ops endpoints stay inside)`);
			const svc = p.backend.service;
			const s = svc && named(objects, 'Service', svc.name);
			if (!s || !s.spec.ports.some((x) => x.name === svc.port.name || x.port === svc.port.number))
				say(`the Ingress routes to ${svc && svc.name}:${svc && (svc.port.name || svc.port.number)}, which does not exist`);
		}
	}
	const ann = ing.metadata.annotations || {};
	if (ann['alb.ingress.kubernetes.io/listen-ports'] !== '[{"HTTPS": 443}]')
		say('the ALB does not listen on HTTPS 443 only');
	if (!/^arn:aws:acm:[a-z0-9-]+:\d{12}:certificate\/[0-9a-f-]{36}$/.test(
		ann['alb.ingress.kubernetes.io/certificate-arn'] || ''))
		say('the Ingress has no ACM certificate ARN');
	if (ann['alb.ingress.kubernetes.io/scheme'] === 'internet-facing' &&
		!/^arn:aws:wafv2:[a-z0-9-]+:\d{12}:regional\/webacl\/[\w-]+\/[0-9a-f-]{36}$/.test(
			ann['alb.ingress.kubernetes.io/wafv2-acl-arn'] || ''))
		say('the internet-facing ALB has no WAF web ACL');
}

function checkConsumer(objects, d, c, problems) {
	const id = kustomize.objectId(d);
	const say = (m) => problems.push(`${id}: ${m}`);
	const name = d.metadata.name;
	const sos = byKind(objects, 'ScaledObject').filter((s) => s.spec.scaleTargetRef.name === name);
	if (sos.length !== 1) {
		say(`${sos.length} ScaledObjects scale it (want 1)`);
		return;
	}
	const so = sos[0].spec;
	if (!(so.minReplicaCount >= 1))
		say('the ScaledObject may scale to zero (order-consumer\'s sweeps and a warm copy need one)');
	if (!(so.maxReplicaCount >= so.minReplicaCount))
		say('the ScaledObject replica bounds are wrong');
	if (typeof so.cooldownPeriod !== 'number')
		say('the ScaledObject has no cooldownPeriod');
	const triggers = so.triggers || [];
	if (triggers.length !== 1 || triggers[0].type !== 'rabbitmq') {
		say('the ScaledObject has not exactly one rabbitmq trigger');
		return;
	}
	const t = triggers[0];
	const md = t.metadata || {};
	// amqp counts ready messages only: busy consumers would be scaled away.
	if (md.protocol !== 'http')
		say(`the rabbitmq trigger's protocol is ${md.protocol}, not http (unacked messages uncounted)`);
	if (md.mode !== 'QueueLength')
		say(`the rabbitmq trigger's mode is ${md.mode}, not QueueLength`);
	if (md.excludeUnacknowledged === 'true')
		say('the rabbitmq trigger excludes unacknowledged messages');
	if (md.queueName !== CONSUMERS[name])
		say(`the rabbitmq trigger watches ${md.queueName}, not ${CONSUMERS[name]}`);
	const prefetch = envValue(objects, c, 'ORDERS_PREFETCH');
	if (!/^\d+$/.test(md.value || '') || md.value !== prefetch)
		say(`the trigger's value ${md.value} is not the consumer's prefetch ${prefetch}`);
	if (md.host || md.hostFromEnv)
		say('the trigger carries its connection in clear metadata');
	const ta = t.authenticationRef && named(objects, 'TriggerAuthentication', t.authenticationRef.name);
	const ref = ta && (ta.spec.secretTargetRef || []).find((r) => r.parameter === 'host');
	if (!ref) {
		say('the trigger has no TriggerAuthentication giving it host');
		return;
	}
	const es = byKind(objects, 'ExternalSecret').find((e) => e.spec.target.name === ref.name);
	const host = es && es.spec.target.template && es.spec.target.template.data &&
		es.spec.target.template.data[ref.key];
	// The management API's URL; the vhost "/" has to be written %2F.
	if (!host || !/^https?:\/\/.*\/%2F$/.test(host))
		say(`the management URL in ${ref.name}/${ref.key} does not end in the vhost %2F`);
}

// Egress and ingress a pod's policies allow: [{peer, ports}] per direction.
function allowed(objects, labels, direction) {
	const rules = [];
	for (const np of byKind(objects, 'NetworkPolicy')) {
		if (!selects(np.spec.podSelector, labels))
			continue;
		const key = direction === 'Egress' ? 'egress' : 'ingress';
		for (const r of np.spec[key] || [])
			rules.push({ peers: r[direction === 'Egress' ? 'to' : 'from'], ports: r.ports, policy: np });
	}
	return rules;
}

function allowsPort(rules, port, protocol, peerOk) {
	return rules.some((r) => (r.ports || []).some((p) => p.port === port &&
		(p.protocol || 'TCP') === protocol) && (r.peers || []).length > 0 && r.peers.every(peerOk));
}

function checkNetwork(objects, problems, overlay) {
	const pols = byKind(objects, 'NetworkPolicy');
	const deny = pols.find((p) => Object.keys(p.spec.podSelector || {}).length === 0 &&
		(p.spec.policyTypes || []).includes('Ingress') && (p.spec.policyTypes || []).includes('Egress') &&
		!(p.spec.ingress || []).length && !(p.spec.egress || []).length);
	if (!deny)
		problems.push('no default-deny NetworkPolicy (every pod, Ingress and Egress, no rule)');
	for (const np of pols) {
		const id = kustomize.objectId(np);
		for (const key of ['ingress', 'egress']) {
			for (const r of np.spec[key] || []) {
				const peers = r[key === 'egress' ? 'to' : 'from'];
				if (!peers || peers.length === 0)
					problems.push(`${id}: an ${key} rule allows every peer`);
				if (!r.ports || r.ports.length === 0)
					problems.push(`${id}: an ${key} rule allows every port`);
				for (const p of peers || []) {
					const cidr = p.ipBlock && p.ipBlock.cidr;
					if (cidr && !/^10\.\d+\.\d+\.\d+\/(8|1[6-9]|2\d)$/.test(cidr))
						problems.push(`${id}: ipBlock ${cidr} is not a private VPC range`);
					if (cidr && overlay && cidr.endsWith('/8'))
						problems.push(`${id}: ipBlock ${cidr} is not narrowed to the VPC`);
				}
			}
		}
	}
	const dnsPeer = (p) => p.namespaceSelector && selects(p.namespaceSelector,
		{ 'kubernetes.io/metadata.name': 'kube-system' }) && p.podSelector &&
		selects(p.podSelector, { 'k8s-app': 'kube-dns' });
	const vpc = (p) => Boolean(p.ipBlock);
	const monitoring = (p) => p.namespaceSelector && !p.podSelector &&
		selects(p.namespaceSelector, { 'kubernetes.io/metadata.name': 'monitoring' });
	const workloads = [...byKind(objects, 'Deployment'), ...byKind(objects, 'Job')];
	for (const w of workloads) {
		const id = kustomize.objectId(w);
		const labels = w.spec.template.metadata.labels || {};
		const out = allowed(objects, labels, 'Egress');
		const inn = allowed(objects, labels, 'Ingress');
		const need = w.kind === 'Job' ? [5432] : [5432, 6379];
		if (!allowsPort(out, 53, 'UDP', dnsPeer))
			problems.push(`${id}: no DNS egress to kube-dns`);
		for (const port of need) {
			if (!allowsPort(out, port, 'TCP', vpc))
				problems.push(`${id}: no egress to port ${port} in the VPC`);
		}
		if (w.kind === 'Deployment' && !allowsPort(out, 5671, 'TCP', vpc) && !allowsPort(out, 5672, 'TCP', vpc))
			problems.push(`${id}: no egress to RabbitMQ (5671/5672) in the VPC`);
		if (w.kind === 'Job') {
			if (out.some((r) => (r.ports || []).some((p) => ![53, 5432].includes(p.port))))
				problems.push(`${id}: the migration may reach more than DNS and PostgreSQL`);
			continue;
		}
		const c = w.spec.template.spec.containers[0];
		for (const p of c.ports || []) {
			if (!allowsPort(inn, p.containerPort, 'TCP', monitoring))
				problems.push(`${id}: monitoring cannot scrape port ${p.containerPort}`);
		}
		const fromVpc = inn.filter((r) => (r.peers || []).some(vpc));
		if (w.metadata.name === API) {
			if (!allowsPort(inn, 8080, 'TCP', vpc))
				problems.push(`${id}: the ALB cannot reach port 8080`);
		} else if (fromVpc.length) {
			problems.push(`${id}: a consumer accepts connections from the VPC`);
		}
	}
}

function checkSecretsAndConfig(objects, problems, overlay) {
	for (const s of byKind(objects, 'Secret'))
		problems.push(`${kustomize.objectId(s)}: a Secret in the manifests (use an ExternalSecret)`);
	const stores = new Set(byKind(objects, 'SecretStore').map((s) => s.metadata.name));
	for (const es of byKind(objects, 'ExternalSecret')) {
		if (!stores.has(es.spec.secretStoreRef.name) || es.spec.secretStoreRef.kind !== 'SecretStore')
			problems.push(`${kustomize.objectId(es)}: its SecretStore is not defined`);
	}
	for (const cm of byKind(objects, 'ConfigMap')) {
		for (const key of Object.keys(cm.data || {})) {
			if (SECRET_VARS.includes(key))
				problems.push(`${kustomize.objectId(cm)}: ${key} belongs in a Secret`);
		}
	}
	const cfg = named(objects, 'ConfigMap', 'orders-config');
	const env = cfg && cfg.data && cfg.data.ORDERS_ENV;
	if (overlay === 'prod' && env !== 'production')
		problems.push(`prod: ORDERS_ENV is ${env}, not production`);
	for (const sa of byKind(objects, 'ServiceAccount')) {
		if (sa.automountServiceAccountToken !== false)
			problems.push(`${kustomize.objectId(sa)}: automountServiceAccountToken is not false`);
	}
	const ns = byKind(objects, 'Namespace');
	if (ns.length !== 1 || (ns[0].metadata.labels || {})['pod-security.kubernetes.io/enforce'] !== 'restricted')
		problems.push('the namespace does not enforce the restricted Pod Security Standard');
}

function checkJob(objects, problems) {
	const jobs = byKind(objects, 'Job');
	if (jobs.length !== 1) {
		problems.push(`${jobs.length} migration Jobs (want 1)`);
		return;
	}
	const j = jobs[0];
	const id = kustomize.objectId(j);
	checkPod(objects, id, j.spec.template, problems);
	if (typeof j.spec.ttlSecondsAfterFinished !== 'number')
		problems.push(`${id}: no ttlSecondsAfterFinished`);
	if (typeof j.spec.backoffLimit !== 'number' || typeof j.spec.activeDeadlineSeconds !== 'number')
		problems.push(`${id}: no backoffLimit and activeDeadlineSeconds`);
	const c = j.spec.template.spec.containers[0];
	if (!/orders-migrate[:@]/.test(c.image || ''))
		problems.push(`${id}: does not run the orders-migrate image`);
	if (!(c.env || []).some((e) => e.name === 'ORDERS_PG_DSN' && e.valueFrom))
		problems.push(`${id}: ORDERS_PG_DSN does not come from a Secret`);
}

// Every property, for one built overlay: a list of problems.
function rules(objects, overlay) {
	const problems = [];
	const deployments = byKind(objects, 'Deployment');
	for (const name of DAEMONS) {
		if (!deployments.some((d) => d.metadata.name === name))
			problems.push(`no Deployment ${name}`);
	}
	for (const d of deployments)
		checkDeployment(objects, d, problems);
	checkJob(objects, problems);
	checkNetwork(objects, problems, overlay);
	checkSecretsAndConfig(objects, problems, overlay);
	if (overlay === 'prod') {
		for (const d of deployments) {
			const image = d.spec.template.spec.containers[0].image;
			if (!/:\d+\.\d+\.\d+$/.test(image) && !/@sha256:[0-9a-f]{64}$/.test(image))
				problems.push(`${kustomize.objectId(d)}: prod image ${image} is not a release`);
		}
	}
	return problems;
}

// The repository's YAML files, tracked or new (not ignored), relative to ROOT.
function repoYamlFiles() {
	const out = execFileSync('git', ['-C', ROOT, 'ls-files', '-co', '--exclude-standard',
		'*.yaml', '*.yml'], { encoding: 'utf8' });
	return out.split('\n').filter((rel) => rel && !rel.includes('node_modules/'));
}

// No Secret with data in any of these YAML files (paths relative to ROOT, or absolute).
function repoSecrets(files = repoYamlFiles()) {
	const problems = [];
	for (const rel of files) {
		const file = path.resolve(ROOT, rel);
		if (!fs.existsSync(file))
			continue;
		for (const doc of YAML.parseAllDocuments(fs.readFileSync(file, 'utf8'))) {
			let v;
			try {
				v = doc.toJS();
			} catch (e) {
				continue;
			}
			if (v && v.kind === 'Secret' && (v.data || v.stringData))
				problems.push(`${rel}: a Secret with data (${(v.metadata || {}).name})`);
		}
	}
	return problems;
}

// ---- running -----------------------------------------------------------------------------

function sortKeys(v) {
	if (Array.isArray(v))
		return v.map(sortKeys);
	if (v && typeof v === 'object')
		return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys(v[k])]));
	return v;
}

// Where kubectl is installed, its kustomize must produce the same objects.
function compareWithKubectl(dir, objects) {
	const probe = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' });
	if (probe.error || probe.status !== 0)
		return { skipped: true, problems: [] };
	const r = spawnSync('kubectl', ['kustomize', dir], { encoding: 'utf8' });
	if (r.status !== 0)
		return { problems: [`kubectl kustomize ${dir}: ${r.stderr.trim()}`] };
	const theirs = new Map(YAML.parseAllDocuments(r.stdout).map((d) => d.toJS()).filter(Boolean)
		.map((o) => [kustomize.objectId(o), JSON.stringify(sortKeys(o))]));
	const mine = new Map(objects.map((o) => [kustomize.objectId(o), JSON.stringify(sortKeys(o))]));
	const problems = [];
	for (const [id, o] of theirs) {
		if (!mine.has(id))
			problems.push(`kubectl kustomize makes ${id}, kustomize.js does not`);
		else if (mine.get(id) !== o)
			problems.push(`${id}: kustomize.js and kubectl kustomize differ`);
	}
	for (const id of mine.keys()) {
		if (!theirs.has(id))
			problems.push(`kustomize.js makes ${id}, kubectl kustomize does not`);
	}
	return { problems };
}

function overlayDir(name) {
	return path.join(ROOT, 'deploy', 'k8s', 'overlays', name);
}

function check() {
	let failed = 0;
	const report = (what, problems) => {
		for (const p of problems)
			console.log(`check-k8s: FAIL: ${what}: ${p}`);
		failed += problems.length;
	};
	const built = {};
	for (const overlay of OVERLAYS) {
		let objects;
		try {
			objects = kustomize.build(overlayDir(overlay));
		} catch (e) {
			report(overlay, [`build: ${e.message}`]);
			continue;
		}
		built[overlay] = objects;
		const kinds = {};
		for (const o of objects)
			kinds[o.kind] = (kinds[o.kind] || 0) + 1;
		console.log(`check-k8s: ${overlay}: ${objects.length} objects: ` +
			Object.entries(kinds).map(([k, n]) => `${n} ${k}`).join(', '));
		const cmp = compareWithKubectl(overlayDir(overlay), objects);
		console.log(`check-k8s: ${overlay}: ` + (cmp.skipped ? 'kubectl not installed, ' +
			'no comparison with kubectl kustomize' : 'same objects as kubectl kustomize'));
		report(overlay, cmp.problems);
		report(overlay, validateSchemas(objects));
		report(overlay, rules(objects, overlay));
	}
	// One TypeScript run for both overlays: it is the slow part.
	const all = [];
	for (const overlay of Object.keys(built))
		all.push(...built[overlay]);
	report('types', typeCheck(all));
	report('repository', repoSecrets());
	if (failed)
		console.log(`check-k8s: ${failed} problem(s)`);
	else
		console.log(`check-k8s: ${Object.keys(built).join(' and ')} build, validate and hold ` +
			'every property; no Secret with data in the repository');
	return failed ? 1 : 0;
}

module.exports = { rules, validateSchemas, typeCheck, repoSecrets, overlayDir, byKind, named };

if (require.main === module) {
	if (process.argv.includes('--self-test'))
		process.exit(require('./check_k8s_selftest').selfTest());
	process.exit(check());
}
