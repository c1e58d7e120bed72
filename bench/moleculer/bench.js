"use strict";

// Peer benchmark: Moleculer local (in-process, no transporter) broker RPC.
// Prints exactly one JSON line on stdout; anything else goes to stderr.

const fs = require("fs");
const path = require("path");
const { ServiceBroker } = require("moleculer");

function envInt(name, def) {
	const raw = process.env[name];
	if (raw === undefined || raw === "") return def;
	const n = Number(raw.replace(/_/g, ""));
	if (!Number.isSafeInteger(n) || n <= 0) {
		console.error(`moleculer bench: env ${name} must be a positive integer, got ${JSON.stringify(raw)}`);
		process.exit(2);
	}
	return n;
}

const CALLS = envInt("CALLS", 200000);
const CALLS64 = envInt("CALLS64", 500000);
const ROUNDS = envInt("ROUNDS", 3);
const CONCURRENCY = 64;

// moleculer's "exports" map hides package.json; index.js sits at the package root.
const MOLECULER_VERSION = JSON.parse(
	fs.readFileSync(path.join(path.dirname(require.resolve("moleculer")), "package.json"), "utf8")
).version;

const PARAMS = { name: "Ada" };
const EXPECTED = "Hello, Ada!";

function warmupCount(calls) {
	return Math.max(1000, Math.floor(calls / 10));
}

function median(xs) {
	const s = [...xs].sort((a, b) => a - b);
	const m = s.length >> 1;
	return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

// Nearest-rank percentile on a sorted array.
function percentile(sorted, p) {
	const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1));
	return sorted[idx];
}

async function check(broker) {
	const res = await broker.call("greeter.hello", PARAMS);
	if (res !== EXPECTED) throw new Error(`unexpected reply: ${JSON.stringify(res)}`);
}

// Throughput one call at a time, untimed per call: the loop pays for no
// clock reading, as the Rust side's does not.
// Also counted per CPU-second of the whole process (every thread, as
// getrusage counts it, warm-up included as on the Rust side).
async function sequential(broker, calls) {
	const cpu = process.cpuUsage();
	const w = warmupCount(calls);
	for (let i = 0; i < w; i++) await broker.call("greeter.hello", PARAMS);
	const start = process.hrtime.bigint();
	for (let i = 0; i < calls; i++) await broker.call("greeter.hello", PARAMS);
	const elapsedNs = Number(process.hrtime.bigint() - start);
	return { callsPerSec: calls / (elapsedNs / 1e9), callsPerCpuSec: (calls + w) / cpuSeconds(cpu) };
}

function cpuSeconds(since) {
	const used = process.cpuUsage(since);
	return (used.user + used.system) / 1e6;
}

// Latency of each call, in a pass of its own: two clock readings per call.
async function latencies(broker, calls) {
	const lat = new Float64Array(calls); // nanoseconds
	for (let i = 0; i < calls; i++) {
		const t0 = process.hrtime.bigint();
		await broker.call("greeter.hello", PARAMS);
		lat[i] = Number(process.hrtime.bigint() - t0);
	}
	lat.sort();
	return { p50Us: percentile(lat, 0.5) / 1e3, p99Us: percentile(lat, 0.99) / 1e3 };
}

async function concurrent(broker, calls, concurrency) {
	const run = async total => {
		let issued = 0;
		const worker = async () => {
			while (issued < total) {
				issued++;
				await broker.call("greeter.hello", PARAMS);
			}
		};
		await Promise.all(Array.from({ length: concurrency }, worker));
	};

	const cpu = process.cpuUsage();
	const w = warmupCount(calls);
	await run(w);
	const start = process.hrtime.bigint();
	await run(calls);
	const elapsedNs = Number(process.hrtime.bigint() - start);
	return { callsPerSec: calls / (elapsedNs / 1e9), callsPerCpuSec: (calls + w) / cpuSeconds(cpu) };
}

// LEAN=0 restores the parameter schema (`{ name: "string" }`, checked by
// Moleculer's validator on every call), which shimeji's typed call does not
// do at run time: the compiler checked it.
const LEAN = process.env.LEAN !== "0";

async function main() {
	const broker = new ServiceBroker({
		nodeID: "bench",
		logger: false,
		transporter: null,
		metrics: false,
		tracing: false,
		validator: !LEAN,
	});

	broker.createService({
		name: "greeter",
		actions: {
			hello: LEAN
				? function hello(ctx) {
						return `Hello, ${ctx.params.name}!`;
				  }
				: {
						params: { name: "string" },
						handler(ctx) {
							return `Hello, ${ctx.params.name}!`;
						},
				  },
		},
	});

	await broker.start();
	try {
		await check(broker);

		const seq = [];
		const lat = [];
		for (let r = 0; r < ROUNDS; r++) {
			seq.push(await sequential(broker, CALLS));
			lat.push(await latencies(broker, CALLS));
		}

		const c64 = [];
		for (let r = 0; r < ROUNDS; r++) c64.push(await concurrent(broker, CALLS64, CONCURRENCY));

		const round2 = x => Math.round(x * 100) / 100;
		const out = {
			peer: "moleculer",
			version: MOLECULER_VERSION,
			node: process.versions.node,
			lean: LEAN,
			seq_calls: CALLS,
			seq_calls_per_sec: Math.round(median(seq.map(s => s.callsPerSec))),
			seq_calls_per_cpu_sec: Math.round(median(seq.map(s => s.callsPerCpuSec))),
			seq_p50_us: round2(median(lat.map(s => s.p50Us))),
			seq_p99_us: round2(median(lat.map(s => s.p99Us))),
			c64_calls: CALLS64,
			c64_calls_per_sec: Math.round(median(c64.map(s => s.callsPerSec))),
			c64_calls_per_cpu_sec: Math.round(median(c64.map(s => s.callsPerCpuSec))),
			rounds: ROUNDS,
		};
		process.stdout.write(JSON.stringify(out) + "\n");
	} finally {
		await broker.stop();
	}
}

main().catch(err => {
	process.stderr.write(`moleculer bench failed: ${err && err.stack ? err.stack : err}\n`);
	process.exit(1);
});
