// The Flowcraft side of flow's equivalence test (equivalence_test.go).
//
//   node createflow.mjs <flowcraft package folder>  > blueprints.json
//
// Builds a fixed set of named flows with Flowcraft's own createFlow and
// prints one JSON object {name: createFlow(...).toBlueprint()}. Nodes are
// classes, whose names Flowcraft takes as their "uses" keys, so the Go side
// can name the same keys. The Go side builds the same flows, call for call.
import { pathToFileURL } from "node:url";
import path from "node:path";
import fs from "node:fs";

const pkg = process.argv[2] || process.env.SQSADAPTER_FLOWCRAFT;
if (!pkg) {
	console.error("usage: node createflow.mjs <flowcraft package folder>");
	process.exit(2);
}
const entry = path.join(pkg, "dist", "index.mjs");
if (!fs.existsSync(entry)) {
	console.error(`flowcraft not found: ${entry} does not exist`);
	process.exit(2);
}
const { createFlow, BaseNode } = await import(pathToFileURL(entry).href);

// uses returns a node class named name. Flowcraft takes a class for a node
// class only if it has exec, and then uses its name as the "uses" key.
const classes = new Map();
function uses(name) {
	if (!classes.has(name)) {
		classes.set(name, { [name]: class extends BaseNode { async exec() {} } }[name]);
	}
	return classes.get(name);
}

const flows = {
	chain: () =>
		createFlow("chain")
			.node("fetch", uses("fetchOrder"), { inputs: "orderId", config: { maxRetries: 3, retryDelay: 100 } })
			.node("check", uses("checkStock"), { params: { warehouse: "north", limit: 5, ratio: 0.5, tags: ["a", "b"] } })
			.node("charge", uses("charge"), { inputs: { id: "orderId", total: "total" }, config: { timeout: 2000, fallback: "refund" } })
			.node("refund", uses("refund"))
			.edge("fetch", "check", { condition: "fetch.total < 500" })
			.edge("check", "charge", { action: "approve", transform: "({id: fetch.id, amount: fetch.total})" }),

	fan: () =>
		createFlow("fan")
			.node("start", uses("stub"))
			.node("left", uses("stub"))
			.node("right", uses("stub"))
			.node("join", uses("merge"), { config: { joinStrategy: "all" } })
			.node("first", uses("merge"), { config: { joinStrategy: "any" } })
			.edge("start", "left")
			.edge("start", "right")
			.edge("left", "join")
			.edge("right", "join")
			.edge("left", "first")
			.edge("right", "first"),

	"batch-between": () =>
		createFlow("batch-between")
			.node("load", uses("load"))
			.edge("load", "items", { condition: "load.length > 0" })
			.batch("items", uses("double"), { inputKey: "load", outputKey: "doubled" })
			.node("sum", uses("sum"), { inputs: "doubled" })
			.edge("items", "sum")
			.node("audit", uses("audit"))
			.edge("load", "audit")
			.edge("items", "audit", { action: "done" }),

	"batch-chunk": () =>
		createFlow("batch-chunk")
			.batch("chunks", uses("worker"), { inputKey: "input", outputKey: "output", chunkSize: 2 })
			.node("report", uses("report"))
			.edge("chunks", "report"),

	loop: () =>
		createFlow("loop")
			.node("initialize", uses("initialize"))
			.node("increment", uses("increment"))
			.node("check", uses("check"))
			.node("final", uses("final"))
			.edge("initialize", "increment")
			.edge("increment", "check")
			.loop("test-loop", { startNodeId: "increment", endNodeId: "check", condition: "counter < 3" })
			.edge("check", "final"),

	"loop-exit": () =>
		createFlow("loop-exit")
			.node("init", uses("init"))
			.node("body", uses("body"))
			.node("after", uses("after"))
			.node("alarm", uses("alarm"))
			.node("log", uses("log"))
			.edge("init", "body")
			.loop("again", { startNodeId: "body", endNodeId: "body", condition: "body.n < 10" })
			.edge("again", "after")
			.edge("again", "alarm", { action: "overflow", condition: "body.n > 100", transform: "ignored" })
			.edge("again", "body", { condition: "body.retry" })
			.edge("init", "log"),

	subflow: () =>
		createFlow("subflow")
			.node("prepare", uses("prepare"))
			.node("child", uses("subflow"), {
				params: { blueprintId: "child-flow", inputs: { orderId: "prepare" }, outputs: { receipt: "charge" } },
				config: { maxRetries: 2 },
			})
			.node("bare", uses("subflow"), { params: { blueprintId: "other" } })
			.edge("prepare", "child")
			.edge("child", "bare"),

	sleep: () =>
		createFlow("sleep")
			.node("before", uses("stub"))
			.sleep("nap", { duration: "15m" })
			.sleep("blink", { duration: 500 })
			.edge("before", "nap")
			.edge("nap", "blink"),

	wait: () =>
		createFlow("wait")
			.node("ask", uses("ask"))
			.wait("approval")
			.wait("callback", { inputs: "ask", params: { eventName: "paid" }, config: { timeout: 60000 } })
			.edge("ask", "approval")
			.edge("approval", "callback", { action: "approved" }),

	mix: () =>
		createFlow("mix")
			.node("fetch", uses("fetch"), { inputs: "query" })
			.batch("enrich", uses("enrichOne"), { inputKey: "fetch", outputKey: "enriched", chunkSize: 10 })
			.edge("fetch", "enrich")
			.node("score", uses("score"))
			.node("tune", uses("tune"))
			.edge("enrich", "score")
			.edge("score", "tune")
			.loop("refine", { startNodeId: "score", endNodeId: "tune", condition: "tune.delta > 0.01" })
			.wait("review", { params: { eventName: "reviewed" } })
			.edge("refine", "review")
			.sleep("cool", { duration: "1h" })
			.edge("review", "cool", { action: "later" })
			.node("publish", uses("publish"))
			.edge("review", "publish", { action: "now", transform: "review.payload" })
			.edge("cool", "publish"),
};

const out = {};
for (const [name, build] of Object.entries(flows)) out[name] = build().toBlueprint();
process.stdout.write(JSON.stringify(out));
