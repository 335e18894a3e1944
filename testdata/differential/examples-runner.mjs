// The Flowcraft side of the examples check (flowcraft_examples_test.go).
//
//   node examples-runner.mjs <flowcraft package folder> <examples folder> ['<initial context JSON>']  > results.json
//
// Loads every blueprint of the examples folder laid out as <folder>/*/*.json
// (the pattern the Go side passes to LoadBlueprints; a blueprint without an
// "id" is named after its file), registers them all as the runtime's
// blueprints (where Flowcraft's subflow node finds them), and runs each
// parent — a blueprint that no subflow node names — through Flowcraft's own
// in-memory FlowRuntime, once per branch choice, with the initial context.
//
// The nodes are stand-ins for the examples' model calls, identical to
// exampleStubs in flowcraft_examples_test.go:
//
//   llm-process    output: params.promptTemplate with each {{name}} replaced
//                  by the value of params.inputs[name] (see render)
//   llm-condition  the same output, and the run's condition action
//   llm-router     the same output, and the run's router action
//   output         the same output, also written to params.outputKey if set
//
// A branch choice is a pair (cond, route): every llm-condition returns the
// action cond, every llm-router the action route. The choices are every
// action on an edge out of an llm-condition node of the parent or of a
// blueprint it reaches through subflows, times every such action out of an
// llm-router node ("" when there are none: no action returned). Prints a
// JSON array with one result per run, parents in id order:
//
//   {name, blueprint, cond, route, status, errors, context, calls, inputs, children, thrown}
//
// context is run()'s final context (JSON form); calls and inputs count the
// invocations and list the input of each, by blueprint id and node id
// (Flowcraft's node:start events); children lists each child run a subflow
// node ran: {node, parent, blueprintId, status, context}.
import { AsyncLocalStorage } from "node:async_hooks";
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [pkg, folder, initialArg] = process.argv.slice(2);
if (!pkg || !folder) {
	console.error("usage: node examples-runner.mjs <flowcraft package folder> <examples folder> ['<initial context JSON>']");
	process.exit(2);
}
const entry = path.join(pkg, "dist", "index.mjs");
if (!fs.existsSync(entry)) {
	console.error(`flowcraft not found: ${entry} does not exist`);
	process.exit(2);
}
const { FlowRuntime, UnsafeEvaluator, SubflowNode } = await import(pathToFileURL(entry).href);
const initial = initialArg ? JSON.parse(initialArg) : {};

// Every <folder>/*/*.json, in path order.
const blueprints = {};
for (const dir of fs.readdirSync(folder, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name).sort()) {
	for (const file of fs.readdirSync(path.join(folder, dir)).filter((f) => f.endsWith(".json")).sort()) {
		const bp = JSON.parse(fs.readFileSync(path.join(folder, dir, file), "utf8"));
		bp.id ??= path.basename(file, ".json");
		if (blueprints[bp.id]) {
			console.error(`blueprint ${bp.id} is defined twice (${dir}/${file})`);
			process.exit(2);
		}
		blueprints[bp.id] = bp;
	}
}
const subflowTargets = (bp) => bp.nodes.filter((n) => n.uses === "subflow").map((n) => n.params?.blueprintId);
const named = new Set(Object.values(blueprints).flatMap(subflowTargets));
const parents = Object.keys(blueprints).filter((id) => !named.has(id)).sort();

// actionsOf lists the actions on edges out of nodes of kind uses, in the
// blueprint id and those it reaches through subflows.
function actionsOf(id, uses, seen = new Set()) {
	const bp = blueprints[id];
	if (!bp || seen.has(id)) return [];
	seen.add(id);
	const kinds = new Set(bp.nodes.filter((n) => n.uses === uses).map((n) => n.id));
	const out = bp.edges.filter((e) => kinds.has(e.source) && e.action).map((e) => e.action);
	for (const child of subflowTargets(bp)) out.push(...actionsOf(child, uses, seen));
	return [...new Set(out)].sort();
}

// text is how a value appears in a rendered prompt: a string as it is,
// anything else as JSON with object members sorted, a missing value as null.
function text(v) {
	if (typeof v === "string") return v;
	return JSON.stringify(sortKeys(v ?? null));
}
function sortKeys(v) {
	if (Array.isArray(v)) return v.map(sortKeys);
	if (v && typeof v === "object") {
		return Object.fromEntries(Object.keys(v).sort().map((k) => [k, sortKeys(v[k])]));
	}
	return v;
}

// render fills params.promptTemplate: each {{name}} of params.inputs takes
// the first of its references (a string, or an array tried in order) that
// has a value, read as "_outputs.<ref>" and failing that as "<ref>".
async function render(ctx) {
	const params = ctx.params || {};
	let out = typeof params.promptTemplate === "string" ? params.promptTemplate : "";
	const inputs = params.inputs && typeof params.inputs === "object" ? params.inputs : {};
	for (const name of Object.keys(inputs).sort()) {
		const refs = Array.isArray(inputs[name]) ? inputs[name] : [inputs[name]];
		let val;
		for (const ref of refs) {
			for (const key of [`_outputs.${ref}`, String(ref)]) {
				const v = await ctx.context.get(key);
				if (v !== undefined && v !== null) {
					val = v;
					break;
				}
			}
			if (val !== undefined) break;
		}
		out = out.replaceAll(`{{${name}}}`, text(val));
	}
	return out;
}

function clean(v) {
	return v === undefined ? null : JSON.parse(JSON.stringify(v));
}

async function runOne(parent, cond, route) {
	const calls = {};
	const inputs = {};
	const children = [];
	const withAction = (res, action) => (action ? { ...res, action } : res);
	const trace = new AsyncLocalStorage();
	// Flowcraft's own subflow node, told apart only so that the child run it
	// starts can be attributed to it.
	class TracedSubflow extends SubflowNode {
		async exec(prep, context) {
			const parentId = context.dependencies.runtime.blueprint?.id;
			return trace.run({ node: this.nodeId, parent: parentId }, () => super.exec(prep, context));
		}
	}
	const registry = {
		"llm-process": async (ctx) => ({ output: await render(ctx) }),
		"llm-condition": async (ctx) => withAction({ output: await render(ctx) }, cond),
		"llm-router": async (ctx) => withAction({ output: await render(ctx) }, route),
		output: async (ctx) => {
			const out = await render(ctx);
			if (typeof ctx.params?.outputKey === "string" && ctx.params.outputKey !== "") await ctx.context.set(ctx.params.outputKey, out);
			return { output: out };
		},
		subflow: TracedSubflow,
	};
	const eventBus = {
		emit: async (ev) => {
			if (ev.type !== "node:start") return;
			const { blueprintId, nodeId, input } = ev.payload;
			const c = (calls[blueprintId] ||= {});
			c[nodeId] = (c[nodeId] || 0) + 1;
			((inputs[blueprintId] ||= {})[nodeId] ||= []).push(clean(input));
		},
	};
	const runtime = new FlowRuntime({ registry, eventBus, blueprints: structuredClone(blueprints), evaluator: new UnsafeEvaluator() });
	const orchestrator = runtime.orchestrator;
	const run = orchestrator.run.bind(orchestrator);
	orchestrator.run = async (execContext, traverser) => {
		const res = await run(execContext, traverser);
		const at = trace.getStore();
		if (at) {
			children.push({ node: at.node, parent: at.parent, blueprintId: execContext.blueprint.id, status: res.status, context: clean(res.context) });
		}
		return res;
	};
	const name = `${parent} cond=${cond} route=${route}`;
	const base = { name, blueprint: parent, cond, route };
	try {
		const result = await runtime.run(structuredClone(blueprints[parent]), structuredClone(initial));
		return {
			...base,
			status: result.status,
			errors: (result.errors || []).map((e) => `${e.nodeId ?? ""}: ${e.message ?? ""}`),
			context: clean(result.context),
			calls,
			inputs,
			children,
		};
	} catch (err) {
		return { ...base, status: "thrown", thrown: String(err?.stack || err), calls, inputs, children };
	}
}

// The UnsafeEvaluator and the runtime log what they see fail; the result
// says what failed.
console.error = () => {};

const results = [];
for (const parent of parents) {
	const conds = actionsOf(parent, "llm-condition");
	const routes = actionsOf(parent, "llm-router");
	for (const cond of conds.length ? conds : [""]) {
		for (const route of routes.length ? routes : [""]) results.push(await runOne(parent, cond, route));
	}
}
process.stdout.write(JSON.stringify(results));
