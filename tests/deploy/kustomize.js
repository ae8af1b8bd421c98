// kustomize.js: builds a kustomization as `kubectl kustomize` does, for the subset of
// kustomize deploy/k8s uses, so that the manifests can be checked offline (kustomize is
// neither a Debian 12 package nor on npm).
//
//   const { build } = require('./kustomize');
//   const objects = build('deploy/k8s/overlays/prod');   // [{apiVersion, kind, ...}, ...]
//
// Supported, in kustomize's order: resources (YAML files, and directories holding a
// kustomization.yaml), patches (strategic-merge patches found by kind and name, or given
// a target; JSON 6902 patches with a target: add, remove, replace, test), namespace, and
// images (name, newName, newTag, digest). Anything else in a kustomization.yaml, and any
// strategic-merge patch whose result kustomize would compute differently from this
// code (a list in a built-in type other than the keyed ones below, $patch directives),
// is an error rather than a silent difference. check_k8s.js compares the result with
// `kubectl kustomize` wherever kubectl is installed.
'use strict';

const fs = require('fs');
const path = require('path');
const nodeRequire = require('module').createRequire(
	path.join(__dirname, '..', '..', 'tools', 'node', 'package.json'));
const YAML = nodeRequire('yaml');

const KUSTOMIZATION_FILES = ['kustomization.yaml', 'kustomization.yml', 'Kustomization'];
const KNOWN_FIELDS = new Set(['apiVersion', 'kind', 'namespace', 'resources', 'patches', 'images']);

// Kinds that live outside any namespace: the namespace transformer leaves them alone.
const CLUSTER_SCOPED = new Set([
	'Namespace', 'ClusterRole', 'ClusterRoleBinding', 'CustomResourceDefinition',
	'PersistentVolume', 'StorageClass', 'IngressClass', 'PriorityClass',
	'ValidatingWebhookConfiguration', 'MutatingWebhookConfiguration', 'ClusterSecretStore',
	'ClusterTriggerAuthentication', 'APIService', 'RuntimeClass',
]);

// API groups whose types carry strategic-merge metadata in kustomize; other kinds
// (custom resources) have none, and their lists are replaced whole.
const BUILTIN_GROUPS = new Set([
	'', 'apps', 'batch', 'autoscaling', 'policy', 'networking.k8s.io', 'rbac.authorization.k8s.io',
	'storage.k8s.io', 'scheduling.k8s.io', 'coordination.k8s.io', 'discovery.k8s.io',
]);

// The keyed lists of built-in types this merger supports: a list under one of these
// field names merges item by item on the key, like kustomize's patchMergeKey.
const MERGE_KEYS = {
	containers: 'name',
	initContainers: 'name',
	env: 'name',
	volumes: 'name',
	volumeMounts: 'mountPath',
};

class KustomizeError extends Error {}

function fail(msg) {
	throw new KustomizeError(msg);
}

function clone(v) {
	return v === undefined ? undefined : JSON.parse(JSON.stringify(v));
}

function isObject(v) {
	return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function group(apiVersion) {
	const slash = (apiVersion || '').indexOf('/');
	return slash < 0 ? '' : apiVersion.slice(0, slash);
}

function objectId(o) {
	const ns = (o.metadata && o.metadata.namespace) || '';
	return `${o.kind}/${ns ? ns + '/' : ''}${o.metadata && o.metadata.name}`;
}

// Every YAML document of a file; empty documents are skipped, bad ones are errors.
function readDocs(file) {
	const docs = YAML.parseAllDocuments(fs.readFileSync(file, 'utf8'));
	const out = [];
	for (const doc of docs) {
		if (doc.errors.length)
			fail(`${file}: ${doc.errors[0].message}`);
		const v = doc.toJS();
		if (v === null || v === undefined)
			continue;
		out.push(v);
	}
	return out;
}

function kustomizationFile(dir) {
	for (const name of KUSTOMIZATION_FILES) {
		const f = path.join(dir, name);
		if (fs.existsSync(f))
			return f;
	}
	return null;
}

// ---- strategic merge ----------------------------------------------------------------

// Merge patch into base (both plain JSON values) the way kustomize's strategic merge
// does for the supported subset; `builtin` tells whether the object's type has merge
// metadata, `where` names the place for errors.
function strategicMerge(base, patch, builtin, where) {
	if (!isObject(patch))
		return clone(patch);
	if ('$patch' in patch || Object.keys(patch).some((k) => k.startsWith('$')))
		fail(`${where}: strategic-merge directives ($patch, $setElementOrder...) are not supported`);
	const out = isObject(base) ? clone(base) : {};
	for (const [key, value] of Object.entries(patch)) {
		const at = `${where}.${key}`;
		if (value === null) {
			delete out[key];
		} else if (Array.isArray(value)) {
			out[key] = mergeList(out[key], value, key, builtin, at);
		} else if (isObject(value)) {
			out[key] = strategicMerge(out[key], value, builtin, at);
		} else {
			out[key] = value;
		}
	}
	return out;
}

function mergeList(base, patch, field, builtin, where) {
	const key = MERGE_KEYS[field];
	if (!builtin)
		return clone(patch);
	const scalars = patch.every((v) => !isObject(v) && !Array.isArray(v));
	// Lists of scalars in built-in types are replaced, save a few merged ones (finalizers);
	// lists of objects merge on their key, and only the keyed ones are supported here.
	if (scalars && field !== 'finalizers')
		return clone(patch);
	if (!key)
		fail(`${where}: a list in a strategic-merge patch of a built-in type; ` +
			'use a JSON 6902 patch (the merge rules of this list are not implemented)');
	const out = Array.isArray(base) ? clone(base) : [];
	for (const item of patch) {
		if (!isObject(item) || !(key in item))
			fail(`${where}: every item needs its merge key "${key}"`);
		const i = out.findIndex((b) => isObject(b) && b[key] === item[key]);
		if (i < 0)
			out.push(clone(item));
		else
			out[i] = strategicMerge(out[i], item, builtin, `${where}[${key}=${item[key]}]`);
	}
	return out;
}

// ---- JSON 6902 ----------------------------------------------------------------------

function pointerTokens(p, where) {
	if (p === '')
		return [];
	if (typeof p !== 'string' || !p.startsWith('/'))
		fail(`${where}: "${p}" is not a JSON pointer`);
	return p.slice(1).split('/').map((t) => t.replace(/~1/g, '/').replace(/~0/g, '~'));
}

function json6902(doc, ops, where) {
	if (!Array.isArray(ops))
		fail(`${where}: a JSON 6902 patch is a list of operations`);
	let out = clone(doc);
	for (const op of ops) {
		const at = `${where} ${op.op} ${op.path}`;
		const tokens = pointerTokens(op.path, at);
		if (tokens.length === 0)
			fail(`${at}: the whole document cannot be patched`);
		const last = tokens[tokens.length - 1];
		let parent = out;
		for (const t of tokens.slice(0, -1)) {
			const next = Array.isArray(parent) ? parent[Number(t)] : parent && parent[t];
			if (next === undefined || next === null || typeof next !== 'object')
				fail(`${at}: ${t} does not exist`);
			parent = next;
		}
		const exists = Array.isArray(parent) ?
			/^\d+$/.test(last) && Number(last) < parent.length : Object.hasOwn(parent, last);
		switch (op.op) {
		case 'test':
			if (!exists || JSON.stringify(parent[last]) !== JSON.stringify(op.value))
				fail(`${at}: test failed (found ${JSON.stringify(parent[last])})`);
			break;
		case 'replace':
			if (!exists)
				fail(`${at}: nothing to replace`);
			parent[last] = clone(op.value);
			break;
		case 'remove':
			if (!exists)
				fail(`${at}: nothing to remove`);
			if (Array.isArray(parent))
				parent.splice(Number(last), 1);
			else
				delete parent[last];
			break;
		case 'add':
			if (Array.isArray(parent)) {
				const i = last === '-' ? parent.length : Number(last);
				if (!/^\d+$/.test(last) && last !== '-' || i > parent.length)
					fail(`${at}: bad array index`);
				parent.splice(i, 0, clone(op.value));
			} else {
				parent[last] = clone(op.value);
			}
			break;
		default:
			fail(`${at}: operation "${op.op}" is not supported`);
		}
	}
	return out;
}

// ---- transformers -------------------------------------------------------------------

function matchesTarget(o, target) {
	for (const field of ['kind', 'name', 'namespace', 'group', 'version']) {
		if (target[field] === undefined)
			continue;
		const actual = {
			kind: o.kind,
			name: o.metadata && o.metadata.name,
			namespace: o.metadata && o.metadata.namespace,
			group: group(o.apiVersion),
			version: (o.apiVersion || '').split('/').pop(),
		}[field];
		if (actual !== target[field])
			return false;
	}
	return true;
}

function applyPatch(objects, entry, dir, where) {
	const extra = Object.keys(entry).filter((k) => !['path', 'patch', 'target'].includes(k));
	if (extra.length)
		fail(`${where}: patch fields not supported: ${extra.join(', ')}`);
	if (entry.target) {
		const bad = Object.keys(entry.target).filter(
			(k) => !['kind', 'name', 'namespace', 'group', 'version'].includes(k));
		if (bad.length)
			fail(`${where}: target fields not supported: ${bad.join(', ')}`);
	}
	if ((entry.path === undefined) === (entry.patch === undefined))
		fail(`${where}: a patch has either a path or an inline patch`);
	const source = entry.path !== undefined ? path.join(dir, entry.path) : `${where} (inline)`;
	const text = entry.path !== undefined ? fs.readFileSync(source, 'utf8') : entry.patch;
	const docs = YAML.parseAllDocuments(text).map((d) => {
		if (d.errors.length)
			fail(`${source}: ${d.errors[0].message}`);
		return d.toJS();
	}).filter((d) => d !== null && d !== undefined);
	if (docs.length === 1 && Array.isArray(docs[0])) {
		if (!entry.target)
			fail(`${source}: a JSON 6902 patch needs a target`);
		const hits = objects.filter((o) => matchesTarget(o, entry.target));
		if (hits.length === 0)
			fail(`${source}: no resource matches the target ${JSON.stringify(entry.target)}`);
		return objects.map((o) => (matchesTarget(o, entry.target) ? json6902(o, docs[0], source) : o));
	}
	let out = objects;
	for (const p of docs) {
		if (!isObject(p))
			fail(`${source}: a strategic-merge patch is a mapping`);
		const target = entry.target ||
			{ kind: p.kind, name: p.metadata && p.metadata.name, namespace: p.metadata && p.metadata.namespace };
		if (!target.kind || !target.name)
			fail(`${source}: a strategic-merge patch without a target names its kind and name`);
		let hits = 0;
		out = out.map((o) => {
			if (!matchesTarget(o, target))
				return o;
			hits++;
			const body = clone(p);
			// A patch's identity is not applied as a change.
			delete body.apiVersion;
			delete body.kind;
			if (body.metadata) {
				delete body.metadata.name;
				delete body.metadata.namespace;
			}
			return strategicMerge(o, body, BUILTIN_GROUPS.has(group(o.apiVersion)),
				`${source} ${objectId(o)}`);
		});
		if (hits === 0)
			fail(`${source}: no resource matches ${target.kind}/${target.name}`);
	}
	return out;
}

function setNamespace(objects, ns, where) {
	return objects.map((o) => {
		if (CLUSTER_SCOPED.has(o.kind)) {
			if (o.kind === 'Namespace' && o.metadata.name !== ns)
				fail(`${where}: Namespace ${o.metadata.name} differs from namespace: ${ns} ` +
					'(kustomize would rename it; not supported)');
			return o;
		}
		const c = clone(o);
		c.metadata = c.metadata || {};
		c.metadata.namespace = ns;
		return c;
	});
}

// "name[:tag][@digest]" with a registry port kept in the name.
function parseImage(ref) {
	let name = ref;
	let digest = null;
	let tag = null;
	const at = name.indexOf('@');
	if (at >= 0) {
		digest = name.slice(at + 1);
		name = name.slice(0, at);
	}
	const colon = name.lastIndexOf(':');
	if (colon > name.lastIndexOf('/')) {
		tag = name.slice(colon + 1);
		name = name.slice(0, colon);
	}
	return { name, tag, digest };
}

function setImages(objects, images, where) {
	for (const img of images) {
		const bad = Object.keys(img).filter((k) => !['name', 'newName', 'newTag', 'digest'].includes(k));
		if (bad.length || !img.name)
			fail(`${where}: images entries take name, newName, newTag, digest (got ${Object.keys(img)})`);
	}
	const rewrite = (ref) => {
		const r = parseImage(ref);
		const img = images.find((i) => i.name === r.name);
		if (!img)
			return ref;
		let out = img.newName || r.name;
		if (img.digest)
			return `${out}@${img.digest}`;
		const tag = img.newTag !== undefined ? String(img.newTag) : r.tag;
		if (tag)
			out += `:${tag}`;
		if (r.digest && img.newTag === undefined)
			out += `@${r.digest}`;
		return out;
	};
	const walk = (node, key) => {
		if (Array.isArray(node)) {
			for (const item of node) {
				if ((key === 'containers' || key === 'initContainers') && isObject(item) &&
					typeof item.image === 'string')
					item.image = rewrite(item.image);
				walk(item, null);
			}
		} else if (isObject(node)) {
			for (const [k, v] of Object.entries(node))
				walk(v, k);
		}
	};
	return objects.map((o) => {
		const c = clone(o);
		walk(c, null);
		return c;
	});
}

// ---- build --------------------------------------------------------------------------

function build(dir, stack = []) {
	const abs = path.resolve(dir);
	if (stack.includes(abs))
		fail(`${abs}: kustomizations include each other`);
	const file = kustomizationFile(abs);
	if (!file)
		fail(`${abs}: no kustomization.yaml`);
	const docs = readDocs(file);
	if (docs.length !== 1 || !isObject(docs[0]))
		fail(`${file}: one mapping expected`);
	const k = docs[0];
	const unknown = Object.keys(k).filter((f) => !KNOWN_FIELDS.has(f));
	if (unknown.length)
		fail(`${file}: fields not supported by this builder: ${unknown.join(', ')}`);
	let objects = [];
	for (const r of k.resources || []) {
		const p = path.join(abs, r);
		if (!fs.existsSync(p))
			fail(`${file}: resource ${r} does not exist`);
		if (fs.statSync(p).isDirectory()) {
			objects.push(...build(p, [...stack, abs]));
		} else {
			for (const o of readDocs(p)) {
				if (!isObject(o) || !o.apiVersion || !o.kind || !o.metadata || !o.metadata.name)
					fail(`${p}: every document needs apiVersion, kind and metadata.name`);
				objects.push(o);
			}
		}
	}
	const seen = new Set();
	for (const o of objects) {
		const id = objectId(o);
		if (seen.has(id))
			fail(`${file}: ${id} is defined twice`);
		seen.add(id);
	}
	(k.patches || []).forEach((entry, i) => {
		objects = applyPatch(objects, entry, abs, `${file} patches[${i}]`);
	});
	if (k.namespace)
		objects = setNamespace(objects, k.namespace, file);
	if (k.images)
		objects = setImages(objects, k.images, file);
	return objects;
}

module.exports = { build, strategicMerge, json6902, parseImage, objectId, KustomizeError };
