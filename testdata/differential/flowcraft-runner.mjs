// The Flowcraft side of the differential test (differential_test.go).
//
//   node flowcraft-runner.mjs <flowcraft package folder>  < cases.json  > results.json
//
// Reads a JSON array of cases {name, blueprint, initial} on stdin, runs each
// through Flowcraft's own in-memory FlowRuntime with the UnsafeEvaluator (the
// JavaScript evaluator the blueprints' expressions are written for) and a
// registry holding one generic node, "stub", and prints a JSON array with one
// result per case, in order:
//
//   {name, status, context, errors, calls, inputs, taken, thrown}
//
// status and context are what run() returned (context without undefined
// values, as JSON has none); errors lists the node ids of the errors the run
// recorded; calls counts the stub's invocations by node id (every attempt);
// inputs lists the input of each invocation by node id; taken lists every
// edge determineNextNodes selected, as [source, target]; thrown is set when
// run() itself threw.
//
// The stub must stay identical to stubNode in differential_test.go: it is a
// pure function of (node id, params, input, attempt).
import { pathToFileURL } from "node:url";
import path from "node:path";
import fs from "node:fs";

const pkg = process.argv[2] || process.env.SQSADAPTER_FLOWCRAFT;
if (!pkg) {
	console.error("usage: node flowcraft-runner.mjs <flowcraft package folder>");
	process.exit(2);
}
const entry = path.join(pkg, "dist", "index.mjs");
if (!fs.existsSync(entry)) {
	console.error(`flowcraft not found: ${entry} does not exist`);
	process.exit(2);
}
const { FlowRuntime, UnsafeEvaluator } = await import(pathToFileURL(entry).href);

// The UnsafeEvaluator logs every expression that throws; an expression that
// throws is part of what is compared (the edge is not taken), not noise.
console.error = () => {};

// stubResult is the stub's behaviour: it throws to fail the attempt, or
// returns {output, action, sets}.
export function stubResult(id, params, input, attempt) {
	params = params || {};
	if (params.fail === true) throw new Error(`stub ${id}: fails`);
	if (typeof params.failUntil === "number" && attempt < params.failUntil) {
		throw new Error(`stub ${id}: attempt ${attempt} fails`);
	}
	let output;
	if (Object.hasOwn(params, "raw")) {
		output = params.raw;
	} else {
		output = { node: id };
		if (params.out && typeof params.out === "object" && !Array.isArray(params.out)) {
			Object.assign(output, params.out);
		}
		if (params.pass === true && input !== undefined && input !== null) output.in = input;
	}
	const res = { output };
	if (typeof params.action === "string") res.action = params.action;
	const sets = params.set && typeof params.set === "object" ? params.set : {};
	return { res, sets };
}

// clean turns a value into its JSON form (undefined members dropped).
function clean(v) {
	return v === undefined ? null : JSON.parse(JSON.stringify(v));
}

async function runCase(c) {
	const calls = {};
	const inputs = {};
	const taken = [];
	const stub = async (ctx) => {
		const id = currentNode(ctx);
		calls[id] = (calls[id] || 0) + 1;
		(inputs[id] ||= []).push(clean(ctx.input));
		const { res, sets } = stubResult(id, ctx.params, ctx.input, calls[id]);
		for (const [k, v] of Object.entries(sets)) await ctx.context.set(k, v);
		return res;
	};
	const runtime = new FlowRuntime({ registry: { stub }, evaluator: new UnsafeEvaluator() });
	const determine = runtime.determineNextNodes.bind(runtime);
	runtime.determineNextNodes = async (...args) => {
		const matched = await determine(...args);
		for (const { edge } of matched) taken.push([edge.source, edge.target]);
		return matched;
	};
	// A fresh copy: Flowcraft mutates node definitions (applyEdgeTransform
	// sets targetNode.inputs).
	const blueprint = structuredClone(c.blueprint);
	const initial = structuredClone(c.initial || {});
	try {
		const result = await runtime.run(blueprint, initial, { concurrency: 64 });
		return {
			name: c.name,
			status: result.status,
			context: clean(result.context),
			errors: (result.errors || []).map((e) => e.nodeId ?? null),
			calls,
			inputs,
			taken,
		};
	} catch (err) {
		return { name: c.name, status: "thrown", thrown: String(err?.stack || err), calls, inputs, taken };
	}
}

// currentNode finds which node a stub invocation runs: Flowcraft's node
// context does not carry the node id, so every stub's params carry it as
// "id" (the test's case builder adds it).
function currentNode(ctx) {
	return ctx.params?.id;
}

const chunks = [];
for await (const chunk of process.stdin) chunks.push(chunk);
const cases = JSON.parse(Buffer.concat(chunks).toString("utf8"));
const results = [];
for (const c of cases) results.push(await runCase(c));
process.stdout.write(JSON.stringify(results));
