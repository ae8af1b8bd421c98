// check_k8s_selftest.js: `check_k8s.js --self-test`. A check that cannot fail proves
// nothing: this plants one violation at a time into the built prod overlay and requires
// the checks to name it, requires the unchanged overlay to pass, and tests kustomize.js
// on small cases where its result is known.
'use strict';

const fs = require('fs');
const os = require('os');
const path = require('path');
const assert = require('assert');
const kustomize = require('./kustomize');
const check = require('./check_k8s');

const { byKind, named } = check;

function deployment(objects, name) {
	return named(objects, 'Deployment', name);
}

function container(objects, name) {
	return deployment(objects, name).spec.template.spec.containers[0];
}

function scaledObject(objects, name) {
	return named(objects, 'ScaledObject', name);
}

function remove(objects, kind, name) {
	const i = objects.findIndex((o) => o.kind === kind && o.metadata.name === name);
	assert(i >= 0, `${kind}/${name} is not in the overlay`);
	objects.splice(i, 1);
}

// Each plants one violation; `want` must appear in one of the problems reported.
const MUTATIONS = [
	['no readiness probe', (o) => delete container(o, 'orders-payment').readinessProbe,
		'readinessProbe is not an HTTP GET of /readyz'],
	['liveness on /readyz', (o) => { container(o, 'orders-order').livenessProbe.httpGet.path = '/readyz'; },
		'livenessProbe is not an HTTP GET of /healthz'],
	['probe on a wrong port', (o) => { container(o, 'orders-api').readinessProbe.httpGet.port = 9999; },
		'readinessProbe port 9999'],
	['consumer ops port not its probe port', (o) => {
		container(o, 'orders-cart').env.find((e) => e.name === 'ORDERS_METRICS_PORT').value = '9200';
	}, "is not the daemon's port 9200"],
	['no memory limit', (o) => delete container(o, 'orders-inventory').resources.limits.memory,
		'no resources.limits.memory'],
	['no requests', (o) => delete container(o, 'orders-api').resources.requests, 'no resources.requests.cpu'],
	['writable root', (o) => { container(o, 'orders-api').securityContext.readOnlyRootFilesystem = false; },
		'readOnlyRootFilesystem is not true'],
	['capabilities kept', (o) => delete container(o, 'orders-payment').securityContext.capabilities,
		'capabilities do not drop ALL'],
	['privilege escalation', (o) => {
		container(o, 'orders-order').securityContext.allowPrivilegeEscalation = true;
	}, 'allowPrivilegeEscalation is not false'],
	['root allowed', (o) => delete deployment(o, 'orders-cart').spec.template.spec.securityContext.runAsNonRoot,
		'pod securityContext.runAsNonRoot is not true'],
	['no seccomp', (o) => {
		delete deployment(o, 'orders-api').spec.template.spec.securityContext.seccompProfile;
		delete container(o, 'orders-api').securityContext.seccompProfile;
	}, 'seccompProfile is not RuntimeDefault'],
	['no zone spread', (o) => {
		const spec = deployment(o, 'orders-inventory').spec.template.spec;
		spec.topologySpreadConstraints = spec.topologySpreadConstraints.filter(
			(t) => t.topologyKey !== 'topology.kubernetes.io/zone');
	}, 'no topology spread over topology.kubernetes.io/zone'],
	['zone spread not enforced', (o) => {
		deployment(o, 'orders-api').spec.template.spec.topologySpreadConstraints[0].whenUnsatisfiable =
			'ScheduleAnyway';
	}, 'the zone spread is not enforced'],
	['no preStop', (o) => delete container(o, 'orders-order').lifecycle, 'no preStop hook'],
	['grace period too short', (o) => {
		deployment(o, 'orders-api').spec.template.spec.terminationGracePeriodSeconds = 20;
	}, 'terminationGracePeriodSeconds 20 does not cover'],
	['replicas fixed under an autoscaler', (o) => { deployment(o, 'orders-payment').spec.replicas = 3; },
		'sets spec.replicas'],
	['token mounted', (o) => { deployment(o, 'orders-api').spec.template.spec.automountServiceAccountToken = true; },
		'pod automountServiceAccountToken is not false'],
	['service account token', (o) => { named(o, 'ServiceAccount', 'orders-cart').automountServiceAccountToken = true; },
		'automountServiceAccountToken is not false'],
	['KEDA in amqp mode', (o) => { scaledObject(o, 'orders-payment').spec.triggers[0].metadata.protocol = 'amqp'; },
		"the rabbitmq trigger's protocol is amqp"],
	['KEDA on message rate', (o) => { scaledObject(o, 'orders-order').spec.triggers[0].metadata.mode = 'MessageRate'; },
		"mode is MessageRate"],
	['KEDA without unacked', (o) => {
		scaledObject(o, 'orders-cart').spec.triggers[0].metadata.excludeUnacknowledged = 'true';
	}, 'excludes unacknowledged'],
	['KEDA on the wrong queue', (o) => {
		scaledObject(o, 'orders-inventory').spec.triggers[0].metadata.queueName = 'payment.authorize';
	}, 'watches payment.authorize'],
	['KEDA target unlike the prefetch', (o) => {
		scaledObject(o, 'orders-payment').spec.triggers[0].metadata.value = '100';
	}, "is not the consumer's prefetch 20"],
	['no ScaledObject', (o) => remove(o, 'ScaledObject', 'orders-cart'), '0 ScaledObjects scale it'],
	['scale to zero', (o) => { scaledObject(o, 'orders-order').spec.minReplicaCount = 0; }, 'may scale to zero'],
	['vhost not %2F', (o) => {
		const es = named(o, 'ExternalSecret', 'orders-rabbitmq-management');
		es.spec.target.template.data.host = es.spec.target.template.data.host.replace('/%2F', '/');
	}, 'does not end in the vhost %2F'],
	['host in clear', (o) => { scaledObject(o, 'orders-cart').spec.triggers[0].metadata.host = 'https://x/%2F'; },
		'carries its connection in clear'],
	['no PDB', (o) => remove(o, 'PodDisruptionBudget', 'orders-order'), '0 PodDisruptionBudgets select'],
	['no HPA', (o) => remove(o, 'HorizontalPodAutoscaler', 'orders-api'), 'no HorizontalPodAutoscaler'],
	['HPA on memory', (o) => {
		named(o, 'HorizontalPodAutoscaler', 'orders-api').spec.metrics[0].resource.name = 'memory';
	}, 'does not scale on CPU'],
	['no default deny', (o) => remove(o, 'NetworkPolicy', 'default-deny'), 'no default-deny NetworkPolicy'],
	['egress to anywhere', (o) => {
		named(o, 'NetworkPolicy', 'allow-daemons-to-services').spec.egress[0].to = [];
	}, 'an egress rule allows every peer'],
	['no Redis egress', (o) => {
		const np = named(o, 'NetworkPolicy', 'allow-daemons-to-services');
		np.spec.egress = np.spec.egress.filter((r) => r.ports[0].port !== 6379);
	}, 'no egress to port 6379'],
	['no DNS', (o) => remove(o, 'NetworkPolicy', 'allow-dns'), 'no DNS egress to kube-dns'],
	['internet in an ipBlock', (o) => {
		named(o, 'NetworkPolicy', 'allow-migrate-to-postgres').spec.egress[0].to[0].ipBlock.cidr = '0.0.0.0/0';
	}, 'is not a private VPC range'],
	['ipBlock not narrowed', (o) => {
		named(o, 'NetworkPolicy', 'allow-api-from-alb').spec.ingress[0].from[0].ipBlock.cidr = '10.0.0.0/8';
	}, 'is not narrowed to the VPC'],
	['no scraping', (o) => remove(o, 'NetworkPolicy', 'allow-metrics-from-monitoring'),
		'monitoring cannot scrape port'],
	['migration reaches Redis', (o) => {
		named(o, 'NetworkPolicy', 'allow-migrate-to-postgres').spec.egress[0].ports.push({ protocol: 'TCP', port: 6379 });
	}, 'the migration may reach more'],
	['a Secret with data', (o) => o.push({ apiVersion: 'v1', kind: 'Secret',
		metadata: { name: 'oops', namespace: 'orders' }, data: { k: 'dg==' } }), 'a Secret in the manifests'],
	['a secret in the ConfigMap', (o) => { named(o, 'ConfigMap', 'orders-config').data.ORDERS_VAULT_KEY = '00'; },
		'ORDERS_VAULT_KEY belongs in a Secret'],
	['card keys outside payment', (o) => container(o, 'orders-api').envFrom.push({ secretRef: { name: 'orders-card-keys' } }),
		'holds the card keys'],
	['a secret in clear env', (o) => container(o, 'orders-order').env.push({ name: 'ORDERS_PG_DSN', value: 'x' }),
		'ORDERS_PG_DSN is given in clear'],
	['an unknown Secret', (o) => { container(o, 'orders-api').envFrom[1].secretRef.name = 'nowhere'; },
		'Secret nowhere comes from no ExternalSecret'],
	['prod in development mode', (o) => { named(o, 'ConfigMap', 'orders-config').data.ORDERS_ENV = 'development'; },
		'ORDERS_ENV is development, not production'],
	['a moving prod tag', (o) => {
		container(o, 'orders-api').image = container(o, 'orders-api').image.replace(/:[^:]+$/, ':main');
	}, 'is not a release'],
	['latest', (o) => { container(o, 'orders-cart').image = 'orders:latest'; }, 'has no fixed tag'],
	['ops endpoints public', (o) => {
		named(o, 'Ingress', 'orders-api').spec.rules[0].http.paths[0].path = '/';
	}, 'the Ingress exposes /'],
	['no WAF', (o) => {
		delete named(o, 'Ingress', 'orders-api').metadata.annotations['alb.ingress.kubernetes.io/wafv2-acl-arn'];
	}, 'has no WAF web ACL'],
	['no TTL on the migration', (o) => delete byKind(o, 'Job')[0].spec.ttlSecondsAfterFinished,
		'no ttlSecondsAfterFinished'],
	['a privileged migration', (o) => { byKind(o, 'Job')[0].spec.template.spec.containers[0].securityContext.privileged = true; },
		'container migrate: privileged'],
	['no restricted namespace', (o) => {
		delete byKind(o, 'Namespace')[0].metadata.labels['pod-security.kubernetes.io/enforce'];
	}, 'does not enforce the restricted'],
	['no API Deployment', (o) => remove(o, 'Deployment', 'orders-api'), 'no Deployment orders-api'],
];

function clone(v) {
	return JSON.parse(JSON.stringify(v));
}

// kustomize.js on cases whose result is known.
function builderCases() {
	const failures = [];
	const t = (name, fn) => {
		try {
			fn();
		} catch (e) {
			failures.push(`builder: ${name}: ${e.message}`);
		}
	};
	const throwsLike = (fn, re) => assert.throws(fn, (e) => e instanceof kustomize.KustomizeError && re.test(e.message));
	const pod = { spec: { template: { spec: { containers: [
		{ name: 'a', image: 'x', env: [{ name: 'A', value: '1' }], ports: [{ containerPort: 1 }] },
		{ name: 'b', image: 'y' }] } } } };
	t('containers and env merge on their keys', () => {
		const out = kustomize.strategicMerge(pod, { spec: { template: { spec: { containers: [
			{ name: 'a', env: [{ name: 'B', value: '2' }, { name: 'A', value: '3' }] }] } } } }, true, 'p');
		const c = out.spec.template.spec.containers;
		assert.deepStrictEqual(c.map((x) => x.name), ['a', 'b']);
		assert.strictEqual(c[0].image, 'x');
		assert.deepStrictEqual(c[0].env, [{ name: 'A', value: '3' }, { name: 'B', value: '2' }]);
	});
	t('null deletes, maps merge', () => {
		const out = kustomize.strategicMerge({ a: { b: 1, c: 2 }, d: 3 }, { a: { c: null, e: 4 } }, true, 'p');
		assert.deepStrictEqual(out, { a: { b: 1, e: 4 }, d: 3 });
	});
	t('a custom resource\'s list is replaced', () => {
		const out = kustomize.strategicMerge({ spec: { triggers: [{ type: 'a' }, { type: 'b' }] } },
			{ spec: { triggers: [{ type: 'c' }] } }, false, 'p');
		assert.deepStrictEqual(out.spec.triggers, [{ type: 'c' }]);
	});
	t('an unkeyed built-in list is refused', () => throwsLike(() => kustomize.strategicMerge(pod,
		{ spec: { template: { spec: { containers: [{ name: 'a', ports: [{ containerPort: 2 }] }] } } } }, true, 'p'),
	/use a JSON 6902 patch/));
	t('$patch is refused', () => throwsLike(() => kustomize.strategicMerge({}, { $patch: 'delete' }, true, 'p'),
		/directives/));
	t('JSON 6902 replace, add, remove', () => {
		const out = kustomize.json6902({ a: [1, 2], b: { c: 1 } }, [
			{ op: 'test', path: '/b/c', value: 1 }, { op: 'replace', path: '/b/c', value: 2 },
			{ op: 'add', path: '/a/-', value: 3 }, { op: 'add', path: '/a/0', value: 0 },
			{ op: 'remove', path: '/a/1' }, { op: 'add', path: '/b/d~1e', value: 5 }], 'p');
		assert.deepStrictEqual(out, { a: [0, 2, 3], b: { c: 2, 'd/e': 5 } });
	});
	t('JSON 6902 test that fails', () => throwsLike(() => kustomize.json6902({ a: 1 },
		[{ op: 'test', path: '/a', value: 2 }], 'p'), /test failed/));
	t('JSON 6902 replace of nothing', () => throwsLike(() => kustomize.json6902({ a: 1 },
		[{ op: 'replace', path: '/b', value: 2 }], 'p'), /nothing to replace/));
	t('image references', () => {
		assert.deepStrictEqual(kustomize.parseImage('reg:5000/a/b:1.2@sha256:ab'),
			{ name: 'reg:5000/a/b', tag: '1.2', digest: 'sha256:ab' });
		assert.deepStrictEqual(kustomize.parseImage('reg:5000/a'), { name: 'reg:5000/a', tag: null, digest: null });
	});
	const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'kustomize-test-'));
	try {
		const write = (rel, text) => {
			fs.mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
			fs.writeFileSync(path.join(dir, rel), text);
		};
		write('base/kustomization.yaml', 'namespace: n\nresources: [d.yaml]\n');
		write('base/d.yaml', 'apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n' +
			'spec:\n  template:\n    spec:\n      containers: [{name: c, image: "app:1"}]\n' +
			'      initContainers: [{name: i, image: app}]\n');
		write('ov/kustomization.yaml', 'resources: [../base]\nimages: [{name: app, newName: r/app, newTag: "2"}]\n' +
			'patches:\n  - patch: |-\n      - {op: add, path: /spec/replicas, value: 2}\n' +
			'    target: {kind: Deployment, name: d}\n  - path: p.yaml\n');
		write('ov/p.yaml', 'apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n' +
			'spec:\n  template:\n    spec:\n      containers: [{name: c, env: [{name: E, value: v}]}]\n');
		t('a base and an overlay', () => {
			const [d] = kustomize.build(path.join(dir, 'ov'));
			assert.strictEqual(d.metadata.namespace, 'n');
			assert.strictEqual(d.spec.replicas, 2);
			assert.strictEqual(d.spec.template.spec.containers[0].image, 'r/app:2');
			assert.strictEqual(d.spec.template.spec.initContainers[0].image, 'r/app:2');
			assert.deepStrictEqual(d.spec.template.spec.containers[0].env, [{ name: 'E', value: 'v' }]);
		});
		write('bad/kustomization.yaml', 'resources: [../base]\nnamePrefix: x-\n');
		t('an unsupported field', () => throwsLike(() => kustomize.build(path.join(dir, 'bad')), /namePrefix/));
		write('twice/kustomization.yaml', 'resources: [../base/d.yaml, ../base/d.yaml]\n');
		t('an object twice', () => throwsLike(() => kustomize.build(path.join(dir, 'twice')), /defined twice/));
		write('nomatch/kustomization.yaml', 'resources: [../base]\npatches: [{path: p.yaml}]\n');
		write('nomatch/p.yaml', 'apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: other}\n');
		t('a patch that matches nothing', () => throwsLike(() => kustomize.build(path.join(dir, 'nomatch')),
			/no resource matches/));
		write('secret.yaml', 'apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {a: b}\n');
		t('a Secret with data in a file', () => assert.strictEqual(
			check.repoSecrets([path.join(dir, 'secret.yaml')]).length, 1));
	} finally {
		fs.rmSync(dir, { recursive: true, force: true });
	}
	return failures;
}

function selfTest() {
	const failures = builderCases();
	const prod = kustomize.build(check.overlayDir('prod'));
	const base = check.rules(prod, 'prod');
	if (base.length)
		failures.push(`the unchanged prod overlay fails: ${base.join('; ')}`);
	let caught = 0;
	for (const [name, mutate, want] of MUTATIONS) {
		const objects = clone(prod);
		mutate(objects);
		const problems = check.rules(objects, 'prod');
		if (problems.some((p) => p.includes(want)))
			caught++;
		else
			failures.push(`planted "${name}" was not caught (wanted "${want}"; got: ${problems.join('; ') || 'nothing'})`);
	}
	// The schema and the type check, on one planted object each.
	const bad = clone(prod);
	container(bad, 'orders-api').ports[0].containerPort = 'http';
	if (!check.validateSchemas(bad).some((p) => p.includes('containerPort must be integer')))
		failures.push('a string containerPort passed the schema validation');
	const typo = clone(prod);
	const c = container(typo, 'orders-inventory');
	c.readinesProbe = c.readinessProbe;
	scaledObject(typo, 'orders-cart').spec.minReplicas = 1;
	const types = check.typeCheck(typo);
	for (const field of ['readinesProbe', 'minReplicas']) {
		if (!types.some((p) => p.includes(`'"${field}"' does not exist`)))
			failures.push(`the misspelt field ${field} passed the type check (${types.join('; ')})`);
	}
	if (check.typeCheck(prod).length)
		failures.push('the unchanged prod overlay fails the type check');
	for (const f of failures)
		console.log(`check-k8s self-test: FAIL: ${f}`);
	console.log(`check-k8s self-test: ${caught} of ${MUTATIONS.length} planted violations caught, ` +
		`${failures.length} failure(s)`);
	return failures.length ? 1 : 0;
}

module.exports = { selfTest };
