#!/usr/bin/env node
// check_terraform.js: offline checks of deploy/terraform (terraform itself
// cannot run here: it needs the provider registry).
//
//   node tests/deploy/check_terraform.js [DIR]       check DIR (default deploy/terraform)
//   node tests/deploy/check_terraform.js --self-test [DIR]
//
// Every .tf file under DIR (the root module and modules/*) is parsed with
// @cdktf/hcl2json, the HCL parser Terraform uses compiled to WebAssembly, so
// a syntax error fails here as it would in `terraform init`, and must be
// laid out as `terraform fmt` would (@cdktf/hcl-tools, the same formatter). The parsed
// configuration is then held to the properties the deployment promises:
// three zones, a Multi-AZ encrypted PostgreSQL with TLS enforced, backups
// and a read replica, Redis with failover and encryption, a multi-AZ private
// RabbitMQ cluster, private TLS-only SSE-KMS buckets with lifecycle, rotated
// KMS keys, the WAF, the alarms, minimal security groups, documented
// variables and outputs, no secret written in a file, and references that
// resolve. environments/*.tfvars must parse and set declared variables only.
//
// --self-test first requires the real configuration to pass, then plants one
// violation at a time (a small HCL snippet that replaces or adds a block)
// and requires the check it targets to fail, so that no check can pass
// silently. Exit status: 0 all good, 1 a check (or a self-test case) failed.
'use strict';

const fs = require('fs');
const path = require('path');
// The parser lives in tools/node (npm ci there; see tools/node/setup.sh).
const nodeRequire = require('module').createRequire(
	path.join(__dirname, '..', '..', 'tools', 'node', 'package.json'));
const { parse } = nodeRequire('@cdktf/hcl2json');
// hclwrite's Format, the formatter behind `terraform fmt`.
const { format } = nodeRequire('@cdktf/hcl-tools');

const REPO = path.resolve(__dirname, '..', '..');
const ROOT = '.';

// ---- loading ------------------------------------------------------------------

function listFiles(dir) {
	const out = [];
	for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
		if (e.name.startsWith('.'))
			continue;
		const p = path.join(dir, e.name);
		if (e.isDirectory())
			out.push(...listFiles(p));
		else if (/\.(tf|tfvars|hcl)$/.test(e.name))
			out.push(p);
	}
	return out.sort();
}

// [{rel, text}] for every .tf, .tfvars and .hcl (backend settings) under dir.
function readTree(dir) {
	return listFiles(dir).map((f) => ({ rel: path.relative(dir, f), text: fs.readFileSync(f, 'utf8') }));
}

function emptyModule() {
	return { resources: new Map(), data: new Map(), variables: new Map(), outputs: new Map(),
		locals: new Map(), modules: new Map(), terraform: [] };
}

// Adds one parsed .tf file to its module. A block already there under the
// same address is replaced (how self-test snippets plant a violation).
function addToModule(mod, file, json) {
	for (const [kind, map] of [['resource', mod.resources], ['data', mod.data]]) {
		for (const [type, byName] of Object.entries(json[kind] || {}))
			for (const [name, bodies] of Object.entries(byName))
				map.set(`${type}.${name}`, { type, name, body: bodies[0], file });
	}
	for (const [kind, map] of [['variable', mod.variables], ['output', mod.outputs], ['module', mod.modules]]) {
		for (const [name, bodies] of Object.entries(json[kind] || {}))
			map.set(name, { name, body: bodies[0], file });
	}
	for (const block of json.locals || [])
		for (const [name, value] of Object.entries(block))
			mod.locals.set(name, { name, value, file });
	if (json.terraform)
		mod.terraform = json.terraform;
}

// Parsed files by name and text: the self-test parses the same files many
// times over. The model never changes a parsed value.
const parsed = new Map();

async function parseCached(rel, text) {
	const key = `${rel}\0${text}`;
	if (!parsed.has(key))
		parsed.set(key, await parse(rel, text));
	return parsed.get(key);
}

const formatted = new Map();

async function isFormatted(text) {
	if (!formatted.has(text))
		formatted.set(text, (await format(text)) === text);
	return formatted.get(text);
}

// The model of a tree: modules by directory ('.' the root), tfvars by file,
// and the raw texts. Throws on a file that does not parse.
async function buildModel(files) {
	const model = { modules: new Map(), tfvars: new Map(), texts: new Map(), unformatted: [] };
	for (const { rel, text } of files) {
		model.texts.set(rel, text);
		let json;
		try {
			json = await parseCached(rel, text);
		} catch (err) {
			throw new Error(`${rel}: does not parse: ${String(err.message || err).replace(/^parse config: /, '')}`);
		}
		if (!(await isFormatted(text)))
			model.unformatted.push(rel);
		if (rel.endsWith('.tfvars')) {
			model.tfvars.set(rel, json);
			continue;
		}
		if (rel.endsWith('.hcl'))
			continue; // backend settings: they must parse, nothing more

		const dir = path.dirname(rel);
		if (!model.modules.has(dir))
			model.modules.set(dir, emptyModule());
		addToModule(model.modules.get(dir), rel, json);
	}
	if (!model.modules.has(ROOT))
		throw new Error('no .tf file in the root module');
	return model;
}

// ---- helpers over parsed values ----------------------------------------------------

const root = (m) => m.modules.get(ROOT);
const ofType = (mod, type) => [...mod.resources.values()].filter((r) => r.type === type);
const dataOfType = (mod, type) => [...mod.data.values()].filter((r) => r.type === type);
const isExpr = (v) => typeof v === 'string' && v.includes('${');
const refers = (v, re) => JSON.stringify(v === undefined ? null : v).match(re) !== null;
const isTrue = (v) => v === true;
const addr = (r) => `${r.file}: ${r.type}.${r.name}`;

// Nested blocks named key, static ones and the content of dynamic ones.
function blocks(body, key) {
	const out = Array.isArray(body && body[key]) ? [...body[key]] : [];
	for (const d of (body && body.dynamic && body.dynamic[key]) || [])
		out.push(...(d.content || []));
	return out;
}

// A number: a literal, a numeric string, or var.X / local.X resolved to its
// default or value. undefined when it cannot be known statically.
function numberOf(mod, v) {
	if (typeof v === 'number')
		return v;
	if (typeof v !== 'string')
		return undefined;
	if (/^-?[0-9.]+$/.test(v))
		return Number(v);
	let m = v.match(/^\$\{var\.([A-Za-z0-9_]+)\}$/);
	if (m && mod.variables.has(m[1]))
		return numberOf(mod, mod.variables.get(m[1]).body.default);
	m = v.match(/^\$\{local\.([A-Za-z0-9_]+)\}$/);
	if (m && mod.locals.has(m[1]))
		return numberOf(mod, mod.locals.get(m[1]).value);
	return undefined;
}

// A string: a literal, or var.X / local.X resolved.
function stringOf(mod, v) {
	if (typeof v !== 'string')
		return undefined;
	let m = v.match(/^\$\{var\.([A-Za-z0-9_]+)\}$/);
	if (m && mod.variables.has(m[1]))
		return stringOf(mod, mod.variables.get(m[1]).body.default);
	m = v.match(/^\$\{local\.([A-Za-z0-9_]+)\}$/);
	if (m && mod.locals.has(m[1]))
		return stringOf(mod, mod.locals.get(m[1]).value);
	return isExpr(v) ? undefined : v;
}

// The validation conditions of variable name, joined (for "is it guarded").
function validations(mod, name) {
	const v = mod.variables.get(name);
	return v ? blocks(v.body, 'validation').map((b) => String(b.condition)).join(' && ') : '';
}

// A whole-number property that may come from a variable: its value (or the
// variable's default) must reach min, and a variable must refuse less.
function atLeast(mod, problems, what, v, min) {
	const n = numberOf(mod, v);
	if (n === undefined || n < min) {
		problems.push(`${what} is ${JSON.stringify(v)}, must be at least ${min}`);
		return;
	}
	const m = typeof v === 'string' && v.match(/^\$\{var\.([A-Za-z0-9_]+)\}$/);
	if (m && !new RegExp(`var\\.${m[1]}\\s*>=?\\s*${min}\\b`).test(validations(mod, m[1])))
		problems.push(`${what} comes from var.${m[1]}, which has no validation refusing less than ${min}`);
}

// Values of every local a for_each or expression refers to, transitively
// through locals that are expressions themselves (for collections built
// with for expressions out of literal ones).
function localsReferenced(mod, v, seen = new Set()) {
	const out = [];
	for (const m of JSON.stringify(v === undefined ? null : v).matchAll(/\blocal\.([A-Za-z0-9_]+)/g)) {
		if (seen.has(m[1]) || !mod.locals.has(m[1]))
			continue;
		seen.add(m[1]);
		const value = mod.locals.get(m[1]).value;
		out.push({ name: m[1], value });
		out.push(...localsReferenced(mod, value, seen));
	}
	return out;
}

// Every value of property key anywhere in a local's structure.
function collectKey(value, key, out = []) {
	if (Array.isArray(value))
		value.forEach((x) => collectKey(x, key, out));
	else if (value && typeof value === 'object')
		for (const [k, x] of Object.entries(value)) {
			if (k === key)
				out.push(x);
			collectKey(x, key, out);
		}
	return out;
}

// Resources of a type in mod whose attribute attr refers to resource r.
function companions(mod, type, r, attr = 'bucket') {
	const re = new RegExp(`\\b${r.type}\\.${r.name}\\b`);
	return ofType(mod, type).filter((c) => refers(c.body[attr], re));
}

// ---- the checks -------------------------------------------------------------------

const checks = {};

checks.format = (model) => model.unformatted.map((f) => `${f}: not laid out as terraform fmt would`);

checks.versions = (model) => {
	const p = [];
	const tf = root(model).terraform;
	const req = tf.flatMap((t) => t.required_providers || []);
	const aws = req.map((r) => r.aws).find(Boolean);
	if (!aws || !/^~>\s*5\./.test(String(aws.version)))
		p.push(`the aws provider must be pinned to ~> 5.x (found ${JSON.stringify(aws && aws.version)})`);
	if (!tf.some((t) => t.required_version))
		p.push('terraform.required_version is not set');
	return p;
};

checks.zones = (model) => {
	const p = [];
	const mod = root(model);
	const az = mod.variables.get('az_count');
	if (!az)
		return ['variable az_count is missing'];
	atLeast(mod, p, 'variable az_count default', '${var.az_count}', 3);
	if (!dataOfType(mod, 'aws_availability_zones').length)
		p.push('no data.aws_availability_zones to take the zones from');
	const azs = mod.locals.get('azs');
	if (!azs || !refers(azs.value, /var\.az_count/))
		p.push('local.azs must take var.az_count zones');
	const subnets = ofType(mod, 'aws_subnet');
	if (subnets.length < 3)
		p.push(`${subnets.length} aws_subnet resources: want a public, an app and a data tier`);
	for (const s of subnets) {
		if (s.body.count !== '${var.az_count}')
			p.push(`${addr(s)}: count must be var.az_count (one subnet per zone), not ${JSON.stringify(s.body.count)}`);
		if (s.body.availability_zone !== '${local.azs[count.index]}')
			p.push(`${addr(s)}: availability_zone must be local.azs[count.index]`);
	}
	for (const type of ['aws_nat_gateway', 'aws_eks_node_group']) {
		const rs = ofType(mod, type);
		if (!rs.length)
			p.push(`no ${type}`);
		for (const r of rs)
			if (r.body.count !== '${var.az_count}')
				p.push(`${addr(r)}: count must be var.az_count (one per zone)`);
	}
	if (!ofType(mod, 'aws_flow_log').length)
		p.push('the VPC has no aws_flow_log');
	return p;
};

checks.eks = (model) => {
	const p = [];
	const mod = root(model);
	const clusters = ofType(mod, 'aws_eks_cluster');
	if (!clusters.length)
		return ['no aws_eks_cluster'];
	for (const c of clusters) {
		const enc = blocks(c.body, 'encryption_config');
		if (!enc.some((e) => refers(e.resources, /"secrets"/) &&
			blocks(e, 'provider').some((pr) => refers(pr.key_arn, /aws_kms_key\./))))
			p.push(`${addr(c)}: Secrets must be encrypted with a KMS key (encryption_config)`);
		const logs = c.body.enabled_cluster_log_types || [];
		for (const t of ['api', 'audit', 'authenticator'])
			if (!logs.includes(t))
				p.push(`${addr(c)}: control-plane log type ${t} is not enabled`);
		if (!blocks(c.body, 'vpc_config').some((v) => isTrue(v.endpoint_private_access)))
			p.push(`${addr(c)}: endpoint_private_access must be true`);
	}
	if (!ofType(mod, 'aws_iam_openid_connect_provider').some((o) => refers(o.body.url, /aws_eks_cluster\./)))
		p.push('no IAM OIDC provider for the cluster (IRSA)');
	const irsa = mod.locals.get('irsa');
	const sas = irsa ? collectKey(irsa.value, 'service_account') : [];
	for (const want of ['aws-load-balancer-controller', 'keda-operator'])
		if (!sas.includes(want))
			p.push(`no IRSA role for the ${want} service account (local.irsa)`);
	return p;
};

checks.rds = (model) => {
	const p = [];
	const mod = root(model);
	const dbs = ofType(mod, 'aws_db_instance');
	const primaries = dbs.filter((d) => d.body.replicate_source_db === undefined);
	const replicas = dbs.filter((d) => d.body.replicate_source_db !== undefined);
	if (!primaries.length)
		return ['no aws_db_instance primary'];
	for (const d of primaries) {
		const b = d.body;
		const w = addr(d);
		if (b.engine !== 'postgres' || !/^15/.test(String(stringOf(mod, b.engine_version))))
			p.push(`${w}: must be PostgreSQL 15`);
		for (const k of ['multi_az', 'storage_encrypted', 'deletion_protection', 'performance_insights_enabled'])
			if (!isTrue(b[k]))
				p.push(`${w}: ${k} must be true`);
		if (b.publicly_accessible !== false)
			p.push(`${w}: publicly_accessible must be false`);
		if (!refers(b.kms_key_id, /aws_kms_key\./))
			p.push(`${w}: storage must be encrypted with a customer KMS key (kms_key_id)`);
		atLeast(mod, p, `${w}: backup_retention_period`, b.backup_retention_period, 7);
		if (!(numberOf(mod, b.monitoring_interval) > 0) || !refers(b.monitoring_role_arn, /aws_iam_role\./))
			p.push(`${w}: enhanced monitoring must be on (monitoring_interval, monitoring_role_arn)`);
		if (b.skip_final_snapshot !== false)
			p.push(`${w}: skip_final_snapshot must be false`);
		if (!isTrue(b.manage_master_user_password) && !refers(b.password, /\$\{/))
			p.push(`${w}: the master password must come from Secrets Manager (manage_master_user_password)`);
		const pg = String(b.parameter_group_name || '').match(/aws_db_parameter_group\.([A-Za-z0-9_-]+)\./);
		const group = pg && mod.resources.get(`aws_db_parameter_group.${pg[1]}`);
		if (!group)
			p.push(`${w}: parameter_group_name must name an aws_db_parameter_group of this configuration`);
		else if (!blocks(group.body, 'parameter').some((x) => x.name === 'rds.force_ssl' && String(x.value) === '1'))
			p.push(`${addr(group)}: rds.force_ssl must be 1 (TLS enforced)`);
		const mine = replicas.filter((r) => refers(r.body.replicate_source_db, new RegExp(`aws_db_instance\\.${d.name}\\.`)));
		if (!mine.length)
			p.push(`${w}: has no read replica (an aws_db_instance with replicate_source_db)`);
	}
	for (const r of replicas) {
		if (!isTrue(r.body.storage_encrypted) || !refers(r.body.kms_key_id, /aws_kms_key\./))
			p.push(`${addr(r)}: the replica must be encrypted with a customer KMS key`);
		if (r.body.publicly_accessible !== false)
			p.push(`${addr(r)}: publicly_accessible must be false`);
	}
	return p;
};

checks.elasticache = (model) => {
	const p = [];
	const mod = root(model);
	const groups = ofType(mod, 'aws_elasticache_replication_group');
	if (!groups.length)
		return ['no aws_elasticache_replication_group'];
	for (const g of groups) {
		const b = g.body;
		for (const k of ['automatic_failover_enabled', 'multi_az_enabled', 'at_rest_encryption_enabled',
			'transit_encryption_enabled'])
			if (!isTrue(b[k]))
				p.push(`${addr(g)}: ${k} must be true`);
		if (!refers(b.kms_key_id, /aws_kms_key\./))
			p.push(`${addr(g)}: at-rest encryption must use a customer KMS key (kms_key_id)`);
		if (!refers(b.auth_token, /aws_secretsmanager_secret_version\./))
			p.push(`${addr(g)}: auth_token must come from Secrets Manager`);
		if (b.num_cache_clusters !== '${var.az_count}' && !(numberOf(mod, b.num_cache_clusters) >= 3))
			p.push(`${addr(g)}: num_cache_clusters must put a node in every zone`);
		if (!/^7/.test(String(stringOf(mod, b.engine_version))))
			p.push(`${addr(g)}: engine_version must be Redis 7`);
	}
	return p;
};

checks.mq = (model) => {
	const p = [];
	const mod = root(model);
	const brokers = ofType(mod, 'aws_mq_broker');
	if (!brokers.length)
		return ['no aws_mq_broker'];
	for (const br of brokers) {
		const b = br.body;
		if (b.engine_type !== 'RabbitMQ')
			p.push(`${addr(br)}: engine_type must be RabbitMQ`);
		if (b.deployment_mode !== 'CLUSTER_MULTI_AZ')
			p.push(`${addr(br)}: deployment_mode must be CLUSTER_MULTI_AZ`);
		if (b.publicly_accessible !== false)
			p.push(`${addr(br)}: publicly_accessible must be false`);
		const version = String(stringOf(mod, b.engine_version)).split('.').map(Number);
		if (!(version[0] > 3 || (version[0] === 3 && version[1] >= 13)))
			p.push(`${addr(br)}: engine_version must be 3.13 or later for quorum queues`);
		if (!refers(b.subnet_ids, /aws_subnet\./) || refers(b.subnet_ids, /aws_subnet\.public\b/))
			p.push(`${addr(br)}: subnet_ids must be private (data) subnets`);
		if (blocks(b, 'user').length !== 1)
			p.push(`${addr(br)}: exactly one (admin) user goes through Terraform`);
	}
	return p;
};

// The policy document a bucket policy uses, if it is a data source of mod.
function policyDocument(mod, policy) {
	const m = String(policy).match(/data\.aws_iam_policy_document\.([A-Za-z0-9_-]+)\.json/);
	return m && mod.data.get(`aws_iam_policy_document.${m[1]}`);
}

function checkBucket(mod, bucket) {
	const p = [];
	const w = addr(bucket);
	const pab = companions(mod, 'aws_s3_bucket_public_access_block', bucket);
	if (!pab.some((x) => ['block_public_acls', 'block_public_policy', 'ignore_public_acls', 'restrict_public_buckets']
		.every((k) => isTrue(x.body[k]))))
		p.push(`${w}: needs a public access block with all four settings true`);
	const sse = companions(mod, 'aws_s3_bucket_server_side_encryption_configuration', bucket);
	if (!sse.some((x) => blocks(x.body, 'rule').some((r) => blocks(r, 'apply_server_side_encryption_by_default')
		.some((d) => d.sse_algorithm === 'aws:kms' && d.kms_master_key_id))))
		p.push(`${w}: needs SSE-KMS default encryption with a key`);
	const policies = companions(mod, 'aws_s3_bucket_policy', bucket);
	const tlsOnly = policies.some((pol) => {
		const doc = policyDocument(mod, pol.body.policy);
		return doc && blocks(doc.body, 'statement').some((s) => s.effect === 'Deny' &&
			blocks(s, 'condition').some((c) => c.test === 'Bool' && c.variable === 'aws:SecureTransport' &&
				refers(c.values, /"false"|false/)));
	});
	if (!tlsOnly)
		p.push(`${w}: its bucket policy must deny requests without TLS (aws:SecureTransport false)`);
	const lc = companions(mod, 'aws_s3_bucket_lifecycle_configuration', bucket);
	if (!lc.some((x) => blocks(x.body, 'rule').some((r) => r.status === 'Enabled' &&
		blocks(r, 'transition').length > 0 && blocks(r, 'expiration').some((e) => e.days !== undefined))))
		p.push(`${w}: needs an enabled lifecycle rule with a transition and an expiration`);
	const ver = companions(mod, 'aws_s3_bucket_versioning', bucket);
	if (!ver.some((x) => blocks(x.body, 'versioning_configuration').some((v) => v.status === 'Enabled')))
		p.push(`${w}: versioning must be enabled`);
	const own = companions(mod, 'aws_s3_bucket_ownership_controls', bucket);
	if (!own.some((x) => blocks(x.body, 'rule').some((r) => r.object_ownership === 'BucketOwnerEnforced')))
		p.push(`${w}: object ownership must be BucketOwnerEnforced (no ACLs)`);
	return p;
}

checks.s3 = (model) => {
	const p = [];
	let buckets = 0;
	for (const [dir, mod] of model.modules) {
		for (const b of ofType(mod, 'aws_s3_bucket')) {
			buckets++;
			p.push(...checkBucket(mod, b));
			if (dir === ROOT)
				continue;
			// A module's bucket is as good as the key its callers give it.
			const calls = [...root(model).modules.values()].filter((c) => path.normalize(String(c.body.source)) === dir);
			if (!calls.length)
				p.push(`${dir}: no module call uses it`);
			for (const c of calls)
				if (!refers(c.body.kms_key_arn, /aws_kms_key\./))
					p.push(`${c.file}: module.${c.name}: kms_key_arn must be a customer KMS key of this configuration`);
		}
	}
	const calls = [...root(model).modules.values()];
	const backups = calls.filter((c) => /backup/.test(c.name));
	const logs = calls.filter((c) => /log/.test(c.name));
	if (!backups.length || !logs.length)
		p.push('want a logs bucket and a backups bucket');
	for (const b of backups)
		if (!logs.some((l) => refers(b.body.access_log_bucket, new RegExp(`module\\.${l.name}\\.`))))
			p.push(`${b.file}: module.${b.name}: access to the backups must be logged into the logs bucket (access_log_bucket)`);
	if (!buckets)
		p.push('no aws_s3_bucket at all');
	return p;
};

checks.kms = (model) => {
	const p = [];
	let keys = 0;
	for (const mod of model.modules.values()) {
		for (const k of ofType(mod, 'aws_kms_key')) {
			keys++;
			if (!isTrue(k.body.enable_key_rotation))
				p.push(`${addr(k)}: enable_key_rotation must be true`);
		}
		for (const g of ofType(mod, 'aws_cloudwatch_log_group'))
			if (!refers(g.body.kms_key_id, /aws_kms_key\./))
				p.push(`${addr(g)}: the log group must be encrypted with a KMS key`);
		for (const t of ofType(mod, 'aws_sns_topic'))
			if (!refers(t.body.kms_master_key_id, /aws_kms_key\./))
				p.push(`${addr(t)}: the topic must be encrypted with a KMS key`);
	}
	if (!keys)
		p.push('no aws_kms_key');
	return p;
};

const WAF_GROUPS = ['AWSManagedRulesCommonRuleSet', 'AWSManagedRulesKnownBadInputsRuleSet',
	'AWSManagedRulesSQLiRuleSet', 'AWSManagedRulesAmazonIpReputationList'];

checks.waf = (model) => {
	const p = [];
	const mod = root(model);
	const acls = ofType(mod, 'aws_wafv2_web_acl');
	if (!acls.length)
		return ['no aws_wafv2_web_acl'];
	for (const acl of acls) {
		if (acl.body.scope !== 'REGIONAL')
			p.push(`${addr(acl)}: scope must be REGIONAL (an ALB)`);
		const names = new Set();
		for (const rule of blocks(acl.body, 'rule'))
			for (const st of blocks(rule, 'statement'))
				for (const g of blocks(st, 'managed_rule_group_statement'))
					names.add(g.name);
		// Rules made by a dynamic block from a local map: its keys.
		for (const d of (acl.body.dynamic && acl.body.dynamic.rule) || [])
			for (const l of localsReferenced(mod, d.for_each))
				if (l.value && typeof l.value === 'object' && !Array.isArray(l.value))
					Object.keys(l.value).forEach((k) => names.add(k));
		for (const g of WAF_GROUPS)
			if (!names.has(g))
				p.push(`${addr(acl)}: the managed rule group ${g} is missing`);
		if (!blocks(acl.body, 'rule').some((r) => blocks(r, 'statement').some((s) => blocks(s, 'rate_based_statement').length)))
			p.push(`${addr(acl)}: no rate-based rule`);
		const re = new RegExp(`aws_wafv2_web_acl\\.${acl.name}\\.arn`);
		if (![...mod.outputs.values()].some((o) => refers(o.body.value, re)) &&
			!ofType(mod, 'aws_wafv2_web_acl_association').some((a) => refers(a.body.web_acl_arn, re)))
			p.push(`${addr(acl)}: neither associated nor given as an output for the Ingress`);
	}
	if (![...mod.outputs.values()].some((o) => refers(o.body.value, /aws_acm_certificate\.[A-Za-z0-9_-]+\.arn/)))
		p.push('no output gives the ACM certificate ARN for the Ingress');
	return p;
};

// What an alarm watches: its namespace and metric names (metric math
// included), each.value.X resolved through the locals its for_each uses.
function alarmFacts(mod, alarm) {
	const b = alarm.body;
	const fromLocals = (v) => {
		const m = typeof v === 'string' && v.match(/^\$\{each\.value\.([A-Za-z0-9_]+)\}$/);
		if (!m)
			return [v];
		return localsReferenced(mod, b.for_each).flatMap((l) => collectKey(l.value, m[1]));
	};
	const metrics = [b.metric_name, ...blocks(b, 'metric_query').flatMap((q) => blocks(q, 'metric')
		.map((x) => x.metric_name))].filter(Boolean).flatMap(fromLocals);
	const namespaces = [b.namespace, ...blocks(b, 'metric_query').flatMap((q) => blocks(q, 'metric')
		.map((x) => x.namespace))].filter(Boolean);
	const actions = localsReferenced(mod, b.alarm_actions).map((l) => l.value);
	return { metrics, namespaces, notifies: refers([b.alarm_actions, actions], /aws_sns_topic\./) };
}

checks.alarms = (model) => {
	const p = [];
	const mod = root(model);
	const alarms = ofType(mod, 'aws_cloudwatch_metric_alarm').map((a) => ({ a, f: alarmFacts(mod, a) }));
	const has = (ns, metric, extra = () => true) =>
		alarms.some(({ a, f }) => f.namespaces.includes(ns) && f.metrics.includes(metric) && extra(a));
	for (const { a, f } of alarms)
		if (!f.notifies)
			p.push(`${addr(a)}: alarm_actions must notify the SNS topic`);
	const overDlq = (a) => localsReferenced(mod, a.body.for_each).some((l) => refers(l.value, /\.dlq/)) ||
		refers(a.body.for_each, /\.dlq/);
	if (!has('AWS/AmazonMQ', 'MessageCount', (a) => refers(a.body.dimensions, /Queue/) && !overDlq(a)))
		p.push('no queue-depth alarm (AWS/AmazonMQ MessageCount per work queue)');
	if (!has('AWS/AmazonMQ', 'MessageCount', (a) => overDlq(a) && numberOf(mod, a.body.threshold) === 0))
		p.push('no dead-letter alarm (AWS/AmazonMQ MessageCount > 0 on the .dlq queues)');
	if (!alarms.some(({ f }) => f.namespaces.includes('AWS/ApplicationELB') && f.metrics.some((m) => /5XX/.test(m))))
		p.push('no ALB 5xx alarm');
	if (!has('AWS/ApplicationELB', 'TargetResponseTime', (a) => /^p99/.test(String(a.body.extended_statistic))))
		p.push('no ALB p99 latency alarm (TargetResponseTime, extended_statistic p99)');
	for (const m of ['CPUUtilization', 'FreeStorageSpace', 'DatabaseConnections', 'ReplicaLag'])
		if (!has('AWS/RDS', m))
			p.push(`no database alarm on AWS/RDS ${m}`);
	for (const m of ['EngineCPUUtilization', 'Evictions', 'ReplicationLag'])
		if (!has('AWS/ElastiCache', m))
			p.push(`no Redis alarm on AWS/ElastiCache ${m}`);
	return p;
};

// Security groups of the data tier: reachable from the nodes' group only,
// on their own ports; nothing anywhere open to the internet.
checks.security_groups = (model) => {
	const p = [];
	const mod = root(model);
	const sgName = (v) => [...JSON.stringify(v || null).matchAll(/aws_security_group\.([A-Za-z0-9_-]+)\.id/g)].map((m) => m[1]);
	const nodeSgs = ofType(mod, 'aws_launch_template').flatMap((lt) => sgName(lt.body.vpc_security_group_ids));
	if (nodeSgs.length !== 1)
		return [`the nodes' launch template must carry exactly one security group of this configuration (found ${nodeSgs.length})`];
	const tiers = [
		['aws_db_instance', 'vpc_security_group_ids', [5432]],
		['aws_elasticache_replication_group', 'security_group_ids', [6379]],
		['aws_mq_broker', 'security_groups', [443, 5671]],
	];
	const rules = ofType(mod, 'aws_vpc_security_group_ingress_rule');
	const legacy = ofType(mod, 'aws_security_group_rule').filter((r) => r.body.type === 'ingress');
	for (const [type, attr, ports] of tiers) {
		const groups = new Set(ofType(mod, type).flatMap((r) => sgName(r.body[attr])));
		if (!groups.size)
			p.push(`${type}: no security group of this configuration`);
		for (const g of groups) {
			const sg = mod.resources.get(`aws_security_group.${g}`);
			if (!sg) {
				p.push(`${type}: security group ${g} is not defined`);
				continue;
			}
			if (blocks(sg.body, 'ingress').length || blocks(sg.body, 'egress').length)
				p.push(`${addr(sg)}: no inline rules; the data tier takes connections only`);
			const re = new RegExp(`aws_security_group\\.${g}\\.id`);
			const mine = rules.filter((r) => refers(r.body.security_group_id, re));
			for (const r of legacy.filter((x) => refers(x.body.security_group_id, re)))
				p.push(`${addr(r)}: use aws_vpc_security_group_ingress_rule for the data tier`);
			const seen = new Set();
			for (const r of mine) {
				const from = numberOf(mod, r.body.from_port);
				if (!refers(r.body.referenced_security_group_id, new RegExp(`aws_security_group\\.${nodeSgs[0]}\\.id`)) ||
					r.body.cidr_ipv4 !== undefined || r.body.cidr_ipv6 !== undefined || r.body.prefix_list_id !== undefined)
					p.push(`${addr(r)}: the data tier accepts the nodes' security group (${nodeSgs[0]}) only`);
				if (!ports.includes(from) || numberOf(mod, r.body.to_port) !== from || r.body.ip_protocol !== 'tcp')
					p.push(`${addr(r)}: ${g} opens only tcp ${ports.join(', ')} (found ${from}-${r.body.to_port})`);
				seen.add(from);
			}
			for (const port of ports)
				if (!seen.has(port))
					p.push(`${addr(sg)}: the nodes cannot reach port ${port}`);
		}
	}
	for (const r of [...rules, ...legacy])
		if (refers([r.body.cidr_ipv4, r.body.cidr_blocks], /0\.0\.0\.0\/0/) || refers(r.body.cidr_ipv6, /::\/0/))
			p.push(`${addr(r)}: opens to the whole internet`);
	for (const sg of ofType(mod, 'aws_security_group'))
		for (const i of blocks(sg.body, 'ingress'))
			if (refers(i.cidr_blocks, /0\.0\.0\.0\/0/))
				p.push(`${addr(sg)}: opens to the whole internet`);
	return p;
};

checks.descriptions = (model) => {
	const p = [];
	for (const mod of model.modules.values()) {
		for (const v of mod.variables.values()) {
			if (typeof v.body.description !== 'string' || v.body.description.trim().length < 10)
				p.push(`${v.file}: variable ${v.name} needs a description`);
			if (v.body.type === undefined)
				p.push(`${v.file}: variable ${v.name} needs a type`);
		}
		for (const o of mod.outputs.values())
			if (typeof o.body.description !== 'string' || o.body.description.trim().length < 10)
				p.push(`${o.file}: output ${o.name} needs a description`);
	}
	return p;
};

// Names that carry a secret value; a literal there is a secret in the repo.
const SECRET_KEY = /(^|_)(password|passwd|secret|secret_string|token|private_key|secret_key|access_key|api_key)$/i;

function literalSecrets(value, where, out) {
	if (Array.isArray(value))
		value.forEach((v, i) => literalSecrets(v, `${where}[${i}]`, out));
	else if (value && typeof value === 'object')
		for (const [k, v] of Object.entries(value)) {
			if (SECRET_KEY.test(k) && typeof v === 'string' && v !== '' && !isExpr(v))
				out.push(`${where}.${k} is a literal: secrets come from Secrets Manager or generated values`);
			literalSecrets(v, `${where}.${k}`, out);
		}
}

checks.secrets = (model) => {
	const p = [];
	for (const mod of model.modules.values()) {
		for (const r of [...mod.resources.values(), ...mod.data.values()])
			literalSecrets(r.body, addr(r), p);
		for (const c of mod.modules.values())
			literalSecrets(c.body, `${c.file}: module.${c.name}`, p);
		for (const l of mod.locals.values())
			literalSecrets({ [l.name]: l.value }, `${l.file}: local`, p);
		for (const v of mod.variables.values())
			if (SECRET_KEY.test(v.name) && typeof v.body.default === 'string' && v.body.default !== '')
				p.push(`${v.file}: variable ${v.name} has a default: no secret in a file`);
	}
	for (const [file, json] of model.tfvars)
		literalSecrets(json, file, p);
	for (const [file, text] of model.texts) {
		if (/\bAKIA[0-9A-Z]{16}\b/.test(text))
			p.push(`${file}: holds an AWS access key id`);
		if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(text))
			p.push(`${file}: holds a private key`);
	}
	return p;
};

// Every string of a parsed value that holds an interpolation.
function expressions(value, out = []) {
	if (Array.isArray(value))
		value.forEach((v) => expressions(v, out));
	else if (value && typeof value === 'object')
		Object.values(value).forEach((v) => expressions(v, out));
	else if (isExpr(value))
		out.push(value);
	return out;
}

// What terraform validate would say about names: every var., local.,
// module., data. and resource reference resolves in its module, every
// module call passes declared variables and every required one, and the
// tfvars set declared variables (and every required one).
checks.references = (model) => {
	const p = [];
	const META = new Set(['source', 'version', 'count', 'for_each', 'depends_on', 'providers']);
	for (const [dir, mod] of model.modules) {
		const items = [...mod.resources.values(), ...mod.data.values()].map((r) => [addr(r), r.body])
			.concat([...mod.outputs.values()].map((o) => [`${o.file}: output ${o.name}`, o.body]))
			.concat([...mod.modules.values()].map((c) => [`${c.file}: module.${c.name}`, c.body]))
			.concat([...mod.locals.values()].map((l) => [`${l.file}: local.${l.name}`, l.value]))
			.concat([...mod.variables.values()].map((v) => [`${v.file}: variable ${v.name}`,
				blocks(v.body, 'validation')]));
		for (const [where, body] of items) {
			const text = expressions(body).join('\n');
			for (const m of text.matchAll(/\bvar\.([A-Za-z0-9_]+)/g))
				if (!mod.variables.has(m[1]))
					p.push(`${where}: var.${m[1]} is not declared in ${dir}`);
			for (const m of text.matchAll(/\blocal\.([A-Za-z0-9_]+)/g))
				if (!mod.locals.has(m[1]))
					p.push(`${where}: local.${m[1]} is not defined in ${dir}`);
			for (const m of text.matchAll(/\bmodule\.([A-Za-z0-9_]+)/g))
				if (!mod.modules.has(m[1]))
					p.push(`${where}: module.${m[1]} is not defined in ${dir}`);
			for (const m of text.matchAll(/\bdata\.([a-z0-9_]+)\.([A-Za-z0-9_-]+)/g))
				if (!mod.data.has(`${m[1]}.${m[2]}`))
					p.push(`${where}: data.${m[1]}.${m[2]} is not defined in ${dir}`);
			for (const m of text.matchAll(/(?<![.\w])((?:aws|random|tls)_[a-z0-9_]+)\.([A-Za-z0-9_-]+)/g))
				if (!mod.resources.has(`${m[1]}.${m[2]}`))
					p.push(`${where}: ${m[1]}.${m[2]} is not defined in ${dir}`);
		}
		for (const c of mod.modules.values()) {
			const target = model.modules.get(path.normalize(path.join(dir, String(c.body.source))));
			if (!target) {
				p.push(`${c.file}: module.${c.name}: source ${c.body.source} is not a module of this tree`);
				continue;
			}
			for (const k of Object.keys(c.body))
				if (!META.has(k) && !target.variables.has(k))
					p.push(`${c.file}: module.${c.name}: ${k} is not a variable of ${c.body.source}`);
			for (const v of target.variables.values())
				if (!('default' in v.body) && !(v.name in c.body))
					p.push(`${c.file}: module.${c.name}: required variable ${v.name} is not set`);
		}
	}
	const vars = root(model).variables;
	for (const [file, json] of model.tfvars) {
		for (const k of Object.keys(json))
			if (!vars.has(k))
				p.push(`${file}: ${k} is not a variable`);
		for (const v of vars.values())
			if (!('default' in v.body) && !(v.name in json))
				p.push(`${file}: required variable ${v.name} is not set`);
	}
	if (!model.tfvars.size)
		p.push('no environments/*.tfvars');
	return p;
};

function runChecks(model, names = Object.keys(checks)) {
	const out = {};
	for (const n of names)
		out[n] = checks[n](model);
	return out;
}

// ---- self-test: each check must catch a planted violation -------------------------------

// Each case replaces or adds blocks (same address = replaced) in one file of
// the tree and names the check that must then fail, and a pattern its
// message must match.
const PLANTS = [
	['format', /zz_planted_main.tf: not laid out/, 'main.tf', 'locals {\n  a = 1\n  bb = 2\n}'],
	['versions', /aws provider/, 'versions.tf', `terraform {
  required_version = ">= 1.10.0"
  required_providers {
    aws = { source = "hashicorp/aws", version = ">= 4.0" }
  }
}`],
	['zones', /at least 3/, 'variables.tf', `variable "az_count" {
  description = "Number of availability zones."
  type        = number
  default     = 2
}`],
	['zones', /no validation/, 'variables.tf', `variable "az_count" {
  description = "Number of availability zones."
  type        = number
  default     = 3
}`],
	['zones', /aws_subnet\.data: count/, 'network.tf', `resource "aws_subnet" "data" {
  count             = 1
  vpc_id            = aws_vpc.main.id
  availability_zone = local.azs[count.index]
  cidr_block        = "10.40.208.0/24"
}`],
	['zones', /aws_nat_gateway\.main: count/, 'network.tf', `resource "aws_nat_gateway" "main" {
  allocation_id = aws_eip.nat[0].id
  subnet_id     = aws_subnet.public[0].id
}`],
	['eks', /Secrets must be encrypted/, 'eks.tf', `resource "aws_eks_cluster" "main" {
  name                      = local.name
  role_arn                  = aws_iam_role.eks_cluster.arn
  enabled_cluster_log_types = ["api", "audit", "authenticator"]
  vpc_config {
    subnet_ids              = aws_subnet.app[*].id
    endpoint_private_access = true
  }
}`],
	['eks', /endpoint_private_access/, 'eks.tf', `resource "aws_eks_cluster" "main" {
  name                      = local.name
  role_arn                  = aws_iam_role.eks_cluster.arn
  enabled_cluster_log_types = ["api", "audit", "authenticator"]
  vpc_config {
    subnet_ids              = aws_subnet.app[*].id
    endpoint_private_access = false
  }
  encryption_config {
    resources = ["secrets"]
    provider {
      key_arn = aws_kms_key.this["eks"].arn
    }
  }
}`],
	['rds', /multi_az must be true/, 'rds.tf', rdsPrimary({ multi_az: 'false' })],
	['rds', /storage_encrypted must be true/, 'rds.tf', rdsPrimary({ storage_encrypted: 'false' })],
	['rds', /backup_retention_period is 3/, 'rds.tf', rdsPrimary({ backup_retention_period: '3' })],
	['rds', /deletion_protection must be true/, 'rds.tf', rdsPrimary({ deletion_protection: 'false' })],
	['rds', /customer KMS key/, 'rds.tf', rdsPrimary({ kms_key_id: null })],
	['rds', /publicly_accessible/, 'rds.tf', rdsPrimary({ publicly_accessible: 'true' })],
	['rds', /rds\.force_ssl must be 1/, 'rds.tf', `resource "aws_db_parameter_group" "postgres" {
  name   = "x"
  family = "postgres15"
  parameter {
    name  = "rds.force_ssl"
    value = "0"
  }
}`],
	['rds', /no read replica/, 'rds.tf', `resource "aws_db_instance" "replica" {
  identifier     = "standalone"
  engine         = "postgres"
  engine_version = "15"
  instance_class = "db.r6g.large"
}`],
	['elasticache', /automatic_failover_enabled must be true/, 'elasticache.tf',
		redisGroup({ automatic_failover_enabled: 'false' })],
	['elasticache', /multi_az_enabled must be true/, 'elasticache.tf', redisGroup({ multi_az_enabled: 'false' })],
	['elasticache', /at_rest_encryption_enabled must be true/, 'elasticache.tf',
		redisGroup({ at_rest_encryption_enabled: 'false' })],
	['elasticache', /transit_encryption_enabled must be true/, 'elasticache.tf',
		redisGroup({ transit_encryption_enabled: 'false' })],
	['elasticache', /auth_token must come from Secrets Manager/, 'elasticache.tf',
		redisGroup({ auth_token: 'random_password.generated["redis-auth-token"].result' })],
	['mq', /CLUSTER_MULTI_AZ/, 'mq.tf', mqBroker({ deployment_mode: '"ACTIVE_STANDBY_MULTI_AZ"' })],
	['mq', /publicly_accessible must be false/, 'mq.tf', mqBroker({ publicly_accessible: 'true' })],
	['mq', /3\.13 or later/, 'mq.tf', mqBroker({ engine_version: '"3.12"' })],
	['mq', /private \(data\) subnets/, 'mq.tf', mqBroker({ subnet_ids: 'aws_subnet.public[*].id' })],
	['s3', /leaky: needs a public access block/, 'planted.tf', 'resource "aws_s3_bucket" "leaky" {\n  bucket = "leaky"\n}'],
	['s3', /all four settings true/, 'modules/secure-bucket/main.tf',
		`resource "aws_s3_bucket_public_access_block" "this" {
  bucket                  = aws_s3_bucket.this.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = false
}`],
	['s3', /SSE-KMS/, 'modules/secure-bucket/main.tf',
		`resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  bucket = aws_s3_bucket.this.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}`],
	['s3', /deny requests without TLS/, 'modules/secure-bucket/main.tf',
		`data "aws_iam_policy_document" "this" {
  source_policy_documents = var.policy_documents
  statement {
    effect    = "Deny"
    actions   = ["s3:DeleteBucket"]
    resources = [aws_s3_bucket.this.arn]
    principals {
      type        = "*"
      identifiers = ["*"]
    }
  }
}`],
	['s3', /lifecycle rule/, 'modules/secure-bucket/main.tf',
		`resource "aws_s3_bucket_lifecycle_configuration" "this" {
  bucket = aws_s3_bucket.this.id
  rule {
    id     = "tier-only"
    status = "Enabled"
    filter {}
    transition {
      days          = 30
      storage_class = "STANDARD_IA"
    }
  }
}`],
	['s3', /versioning must be enabled/, 'modules/secure-bucket/main.tf',
		`resource "aws_s3_bucket_versioning" "this" {
  bucket = aws_s3_bucket.this.id
  versioning_configuration {
    status = "Suspended"
  }
}`],
	['s3', /kms_key_arn must be a customer KMS key/, 's3.tf', `module "logs_bucket" {
  source          = "./modules/secure-bucket"
  name            = local.logs_bucket_name
  kms_key_arn     = "arn:aws:kms:eu-central-1:123456789012:alias/aws/s3"
  expiration_days = 400
}`],
	['s3', /logged into the logs bucket/, 's3.tf', `module "backups_bucket" {
  source          = "./modules/secure-bucket"
  name            = local.backups_bucket_name
  kms_key_arn     = aws_kms_key.this["s3"].arn
  expiration_days = 400
}`],
	['kms', /enable_key_rotation must be true/, 'kms.tf', `resource "aws_kms_key" "this" {
  for_each            = local.kms_keys
  description         = each.value
  enable_key_rotation = false
}`],
	['kms', /log group must be encrypted/, 'planted.tf',
		'resource "aws_cloudwatch_log_group" "clear" {\n  name = "clear"\n}'],
	['waf', /AWSManagedRulesSQLiRuleSet is missing/, 'alb_waf.tf', `locals {
  waf_managed_rule_groups = {
    AWSManagedRulesAmazonIpReputationList = { priority = 10, count_only = [] }
    AWSManagedRulesCommonRuleSet          = { priority = 20, count_only = [] }
    AWSManagedRulesKnownBadInputsRuleSet  = { priority = 30, count_only = [] }
  }
}`],
	['waf', /no rate-based rule/, 'alb_waf.tf', `resource "aws_wafv2_web_acl" "api" {
  name  = "x"
  scope = "REGIONAL"
  default_action {
    allow {}
  }
  dynamic "rule" {
    for_each = local.waf_managed_rule_groups
    content {
      name     = rule.key
      priority = rule.value.priority
    }
  }
}`],
	['waf', /neither associated nor given as an output/, 'outputs.tf', `output "waf_web_acl_arn" {
  description = "Not the ACL any more."
  value       = aws_wafv2_web_acl.api.name
}`],
	['alarms', /no dead-letter alarm/, 'cloudwatch.tf', `resource "aws_cloudwatch_metric_alarm" "dead_letters" {
  for_each            = toset(var.work_queues)
  alarm_name          = each.key
  namespace           = "AWS/AmazonMQ"
  metric_name         = "MessageCount"
  dimensions          = { Queue = each.key }
  threshold           = 0
  comparison_operator = "GreaterThanThreshold"
  alarm_actions       = local.alarm_actions
}`],
	['alarms', /no queue-depth alarm/, 'cloudwatch.tf', `resource "aws_cloudwatch_metric_alarm" "queue_depth" {
  for_each      = toset(var.work_queues)
  alarm_name    = each.key
  namespace     = "AWS/AmazonMQ"
  metric_name   = "ConsumerCount"
  dimensions    = { Queue = each.key }
  alarm_actions = local.alarm_actions
}`],
	['alarms', /p99 latency/, 'cloudwatch.tf', `resource "aws_cloudwatch_metric_alarm" "alb_latency_p99" {
  alarm_name    = "x"
  namespace     = "AWS/ApplicationELB"
  metric_name   = "TargetResponseTime"
  statistic     = "Average"
  alarm_actions = local.alarm_actions
}`],
	['alarms', /no ALB 5xx alarm/, 'cloudwatch.tf', `resource "aws_cloudwatch_metric_alarm" "alb_5xx" {
  alarm_name    = "x"
  namespace     = "AWS/ApplicationELB"
  metric_name   = "RequestCount"
  statistic     = "Sum"
  alarm_actions = local.alarm_actions
}`],
	['alarms', /AWS\/RDS ReplicaLag/, 'cloudwatch.tf', `locals {
  db_alarms = {
    cpu = { instance = "a", metric = "CPUUtilization", statistic = "Average", comparison = "GreaterThanThreshold", threshold = 80, periods = 3, missing = "breaching", description = "x" }
    free-storage = { instance = "a", metric = "FreeStorageSpace", statistic = "Minimum", comparison = "LessThanThreshold", threshold = 1, periods = 1, missing = "breaching", description = "x" }
    connections = { instance = "a", metric = "DatabaseConnections", statistic = "Maximum", comparison = "GreaterThanThreshold", threshold = 1, periods = 1, missing = "breaching", description = "x" }
  }
}`],
	['alarms', /AWS\/ElastiCache Evictions/, 'cloudwatch.tf', `locals {
  redis_alarm_kinds = [
    { name = "engine-cpu", metric = "EngineCPUUtilization", statistic = "Average", threshold = 80, missing = "breaching" },
    { name = "replication-lag", metric = "ReplicationLag", statistic = "Maximum", threshold = 5, missing = "notBreaching" },
  ]
}`],
	['alarms', /must notify the SNS topic/, 'planted.tf', `resource "aws_cloudwatch_metric_alarm" "silent" {
  alarm_name  = "silent"
  namespace   = "AWS/RDS"
  metric_name = "CPUUtilization"
}`],
	['security_groups', /opens to the whole internet/, 'planted.tf',
		`resource "aws_vpc_security_group_ingress_rule" "rds_from_anywhere" {
  security_group_id = aws_security_group.rds.id
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 5432
  to_port           = 5432
}`],
	['security_groups', /opens only tcp 443, 5671/, 'planted.tf',
		`resource "aws_vpc_security_group_ingress_rule" "mq_plain_amqp" {
  security_group_id            = aws_security_group.mq.id
  referenced_security_group_id = aws_security_group.nodes.id
  ip_protocol                  = "tcp"
  from_port                    = 5672
  to_port                      = 5672
}`],
	['security_groups', /cannot reach port 6379/, 'security_groups.tf',
		`resource "aws_vpc_security_group_ingress_rule" "redis_from_nodes" {
  security_group_id            = aws_security_group.rds.id
  referenced_security_group_id = aws_security_group.nodes.id
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
}`],
	['descriptions', /variable undocumented needs a description/, 'variables.tf',
		'variable "undocumented" {\n  type    = string\n  default = "x"\n}'],
	['descriptions', /output bare needs a description/, 'outputs.tf', 'output "bare" {\n  value = local.name\n}'],
	['descriptions', /modules\/secure-bucket\/.*variable name needs a description/,
		'modules/secure-bucket/variables.tf', 'variable "name" {\n  type = string\n}'],
	['secrets', /password is a literal/, 'mq.tf', mqBroker({}, 'hunter2hunter2')],
	['secrets', /db_password has a default/, 'variables.tf',
		'variable "db_password" {\n  description = "Master password."\n  type        = string\n  default     = "s3cret-s3cret"\n}'],
	['secrets', /prod\.tfvars\.redis_auth_token is a literal/, 'environments/prod.tfvars',
		'environment = "prod"\nregion = "eu-central-1"\napi_domain_name = "api.example.com"\nredis_auth_token = "0123456789abcdef0123"\n'],
	['secrets', /access key id/, 'planted.tf', '# AKIAABCDEFGHIJKLMNOP\nlocals {\n  nothing = 1\n}'],
	['references', /var\.undeclared is not declared/, 'planted.tf', 'locals {\n  x = var.undeclared\n}'],
	['references', /aws_kms_key\.missing is not defined/, 'planted.tf',
		'resource "aws_sns_topic" "t" {\n  name              = "t"\n  kms_master_key_id = aws_kms_key.missing.arn\n}'],
	['references', /colour is not a variable/, 's3.tf', `module "logs_bucket" {
  source          = "./modules/secure-bucket"
  name            = local.logs_bucket_name
  kms_key_arn     = aws_kms_key.this["s3"].arn
  expiration_days = 400
  colour          = "blue"
}`],
	['references', /required variable region is not set/, 'environments/prod.tfvars',
		'environment = "prod"\napi_domain_name = "api.example.com"\n'],
];

function rdsPrimary(overrides) {
	const attrs = {
		engine: '"postgres"', engine_version: '"15"', instance_class: '"db.r6g.large"', multi_az: 'true',
		storage_encrypted: 'true', kms_key_id: 'aws_kms_key.this["rds"].arn', backup_retention_period: '14',
		deletion_protection: 'true', publicly_accessible: 'false', performance_insights_enabled: 'true',
		monitoring_interval: '15', monitoring_role_arn: 'aws_iam_role.rds_monitoring.arn',
		skip_final_snapshot: 'false', manage_master_user_password: 'true',
		parameter_group_name: 'aws_db_parameter_group.postgres.name', ...overrides,
	};
	return `resource "aws_db_instance" "primary" {\n${Object.entries(attrs).filter(([, v]) => v !== null)
		.map(([k, v]) => `  ${k} = ${v}`).join('\n')}\n}`;
}

function redisGroup(overrides) {
	const attrs = {
		replication_group_id: 'local.redis_id', description: '"x"', engine_version: '"7.1"',
		num_cache_clusters: 'var.az_count', automatic_failover_enabled: 'true', multi_az_enabled: 'true',
		at_rest_encryption_enabled: 'true', transit_encryption_enabled: 'true',
		kms_key_id: 'aws_kms_key.this["data"].arn',
		auth_token: 'aws_secretsmanager_secret_version.redis_auth_token.secret_string', ...overrides,
	};
	return `resource "aws_elasticache_replication_group" "redis" {\n${Object.entries(attrs)
		.map(([k, v]) => `  ${k} = ${v}`).join('\n')}\n}`;
}

function mqBroker(overrides, password) {
	const attrs = {
		broker_name: '"x"', engine_type: '"RabbitMQ"', engine_version: 'var.mq_engine_version',
		host_instance_type: '"mq.m5.large"', deployment_mode: '"CLUSTER_MULTI_AZ"', publicly_accessible: 'false',
		subnet_ids: 'aws_subnet.data[*].id', security_groups: '[aws_security_group.mq.id]', ...overrides,
	};
	const pw = password ? `"${password}"` : 'random_password.generated["mq-admin"].result';
	return `resource "aws_mq_broker" "rabbitmq" {\n${Object.entries(attrs).map(([k, v]) => `  ${k} = ${v}`)
		.join('\n')}\n  user {\n    username = "admin"\n    password = ${pw}\n  }\n}`;
}

// The tree with one file changed: a snippet for a .tf file is added to it
// (its blocks replace those with the same address); a .tfvars snippet
// replaces the file; a new file is added.
function plantInto(files, rel, snippet) {
	const out = files.filter((f) => !(rel.endsWith('.tfvars') && f.rel === rel));
	if (rel.endsWith('.tfvars'))
		return [...out, { rel, text: snippet }];
	// A separate file of the same directory, read after the real one.
	return [...out, { rel: path.join(path.dirname(rel), `zz_planted_${path.basename(rel)}`), text: snippet }];
}

async function selfTest(files) {
	let failed = 0;
	const base = runChecks(await buildModel(files));
	for (const [name, problems] of Object.entries(base))
		if (problems.length) {
			failed++;
			console.log(`FAIL self-test: the real configuration fails ${name} first:\n  ${problems.join('\n  ')}`);
		}
	const caught = new Map(Object.keys(checks).map((n) => [n, 0]));
	for (const [check, want, rel, snippet] of PLANTS) {
		let problems;
		try {
			problems = runChecks(await buildModel(plantInto(files, rel, snippet)), [check])[check];
		} catch (err) {
			problems = [String(err.message || err)];
		}
		if (problems.some((x) => want.test(x))) {
			caught.set(check, caught.get(check) + 1);
			console.log(`ok   ${check}: caught ${want} (${rel})`);
		} else {
			failed++;
			console.log(`FAIL ${check}: a planted violation in ${rel} passed; want ${want}, got:\n  ${problems.join('\n  ') || '(nothing)'}`);
		}
	}
	for (const [check, n] of caught)
		if (!n) {
			failed++;
			console.log(`FAIL ${check}: no planted violation tests it`);
		}
	// A file that does not parse must fail the whole run.
	try {
		await buildModel(plantInto(files, 'planted.tf', 'resource "aws_s3_bucket" "x" {'));
		failed++;
		console.log('FAIL parse: an unclosed block was accepted');
	} catch (err) {
		console.log('ok   parse: an unclosed block is refused');
	}
	console.log(`self-test: ${PLANTS.length + 1 - failed} passed, ${failed} failed`);
	return failed === 0;
}

async function main() {
	const args = process.argv.slice(2);
	const self = args[0] === '--self-test';
	const dir = path.resolve(args[self ? 1 : 0] || path.join(REPO, 'deploy', 'terraform'));
	const files = readTree(dir);
	if (!files.some((f) => f.rel.endsWith('.tf')))
		throw new Error(`${dir}: no .tf files`);
	if (self)
		return selfTest(files);
	const results = runChecks(await buildModel(files));
	let failed = 0;
	for (const [name, problems] of Object.entries(results)) {
		if (problems.length)
			failed++;
		console.log(`${problems.length ? 'FAIL' : 'ok  '} ${name}${problems.map((x) => `\n  ${x}`).join('')}`);
	}
	const n = Object.keys(results).length;
	console.log(`terraform-check: ${files.length} files; ${n - failed} passed, ${failed} failed`);
	return failed === 0;
}

main().then((ok) => process.exit(ok ? 0 : 1), (err) => {
	console.error(`terraform-check: ${err.message || err}`);
	process.exit(1);
});
