// llama.cpp peer for bench/local_backend_bench.cpp: the same numbers, on the
// same GGUF files and thread counts, measured with llama.cpp through
// node-llama-cpp's prebuilt CPU binaries (llama-bench is not installable on
// every machine; npm is). This is a benchmark peer only: it is never a
// dependency of the build or the tests, and nothing else in the repository
// imports it.
//
// Install (once; node_modules/ here is git-ignored):
//
//   cd bench/llama_cpp_peer && npm ci
//
// It fetches every prebuilt package node-llama-cpp lists for this platform
// (CUDA and Vulkan ones too, about 730 MB in all); only the CPU one is used.
// node-llama-cpp is pinned to 3.21.1 because the registry this lockfile was
// made from lacked some of 3.22.1's platform packages, which leaves them out
// of package-lock.json and makes `npm ci` refuse it.
// npm ci may warn that node-llama-cpp's postinstall script was not run; it is
// not needed: the prebuilt binary ships in @node-llama-cpp/linux-x64 and this
// script refuses to build llama.cpp from source (getLlama({build: "never"})).
// If the prebuilt binary cannot be used here, it stops with getLlama's error.
//
// Run:
//
//   node peer.mjs [--model-dir DIR] [--types f16,q8_0,q4_0,q4_k] [--threads 1,2]
//                 [--reps N] [--decode N] [--batch N] [--files A.gguf,B.gguf]
//                 [--tool PATH] [--wait-while PATTERN]
//
// Model files are DIR/qwen2.5-0.5b-TYPE.gguf (default DIR:
// $TOLLGATE_BENCH_MODEL_DIR, else ./bench-models from the current directory,
// as for tollgate_local_bench); missing ones are written with
// `build/bin/tollgate-model write-random --arch qwen2 --shape qwen2.5-0.5b
// --type TYPE --out FILE` when that tool is built (or `--tool PATH`). --files
// measures the given files instead (the table's type column is then the file
// name). --wait-while PATTERN (repeatable): before each cell, wait (up to 20
// minutes) while another process whose command line contains PATTERN runs
// (e.g. tollgate_local_bench, or "peer.mjs --child" for another run of this
// script, on a shared machine).
//
// What is measured, per (file, threads) cell, in a child node process of its
// own (this script with --child):
//   load        getLlama() is done first (it loads the addon and ggml's
//               shared libraries, which is not the model's load); then
//               loadModel (mmap, as llama.cpp's default) + createContext
//               (4096 tokens, one sequence, batch 512, f16 KV, flash
//               attention "auto", the given threads), with the file already
//               in the page cache (the parent reads it once first). It
//               includes node-llama-cpp's own parse of the GGUF header in JS
//               (about 0.2 s here), which llama-bench does not have.
//   peak RSS    the child's process.resourceUsage().maxRSS, read after the
//               one-sequence runs (prefill and b1 decode), before the batch
//               context is created, as tollgate_local_bench does. It includes
//               node's own baseline and the addon's, both printed above the
//               table (bare `node`, and node after import + getLlama()), so
//               the "net" figure is peak RSS minus the latter. The peak after
//               the batch run is printed below the table.
//   prefill N   N random token ids (N = 64, 512) evaluated in one batch with
//               sequence.evaluateWithoutGeneratingNewTokens (no logits
//               requested), after clearHistory(); N / time.
//   decode b1   after a 16-token prompt (15 tokens prefilled untimed),
//               `--decode` (default 64) steps of greedy generation with
//               sequence.evaluate() (temperature 0, EOG tokens are not a
//               stop): one token per llama_decode call, plus sampling.
//   decode b8   a context with `--batch` (default 8) sequences (256 tokens
//               each): each gets its own prompt of 12 + i % 8 random tokens
//               (prefilled together, untimed), then `--decode` greedy steps
//               of all sequences in lockstep: one evaluate() generator per
//               sequence, and each step calls next() on all of them in the
//               same tick, so node-llama-cpp queues one token of each and
//               dispatches them as one llama_decode of `batch` tokens; the
//               next step starts when every sequence has its token.
//               Aggregate = batch * decode / time. The llama_decode calls of
//               the timed part and their tokens are counted and printed below
//               the table (expected: `decode` calls of `batch` tokens per
//               run; the parent warns when a part is not the calls it should
//               be, for prefill one call, for b1 `decode` calls of 1 token).
//               Lockstep, because free-running generators (each consumed by
//               its own `for await` loop) drift apart: a sequence whose
//               sampling finishes first is queued and decoded alone or in a
//               partial batch (seen: 73 llama_decode calls of 7.0 tokens for
//               64 steps of 8), which costs a near-full decode step each time.
// Every number is the median of --reps (default 3) runs after one warm-up run.
// Below the table, per cell: the 1-minute load average before and after it,
// the spread of its timed runs, and its CPU time over wall time in them
// (about the thread count when it had its cores; less flags a cell that
// shared them with other work and should be rerun).
//
// Node's event loop and the JS-side batching add a little time to every
// decode step (a setImmediate dispatch and an async round trip per token);
// at these model sizes that is small next to a llama_decode call, but it is
// in the numbers, as it is for any node-llama-cpp user.
import {spawnSync} from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import {fileURLToPath} from "node:url";

const scriptPath = fileURLToPath(import.meta.url);
const repoRoot = path.resolve(path.dirname(scriptPath), "..", "..");

function parseArgs(argv) {
    const args = {
        modelDir: process.env.TOLLGATE_BENCH_MODEL_DIR || path.resolve("bench-models"),
        types: ["f16", "q8_0", "q4_0", "q4_k"],
        threads: [1, 2],
        reps: 3,
        decode: 64,
        batch: 8,
        files: null,
        tool: path.join(repoRoot, "build", "bin", "tollgate-model"),
        waitWhile: [],
        child: null,
        baseline: false
    };
    for (let i = 0; i < argv.length; i++) {
        const a = argv[i];
        const next = () => {
            if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
            return argv[++i];
        };
        const positiveInt = (s) => {
            const n = Number(s);
            if (!Number.isInteger(n) || n < 1) throw new Error(`${a}: not a positive integer: ${s}`);
            return n;
        };
        if (a === "--model-dir") args.modelDir = next();
        else if (a === "--types") args.types = next().split(",").filter(Boolean);
        else if (a === "--threads") args.threads = next().split(",").filter(Boolean).map(positiveInt);
        else if (a === "--reps") args.reps = positiveInt(next());
        else if (a === "--decode") args.decode = positiveInt(next());
        else if (a === "--batch") args.batch = positiveInt(next());
        else if (a === "--files") args.files = next().split(",").filter(Boolean);
        else if (a === "--tool") args.tool = next();
        else if (a === "--wait-while") args.waitWhile.push(next());
        else if (a === "--child") args.child = {file: next(), threads: positiveInt(next())};
        else if (a === "--baseline") args.baseline = true;
        else if (a === "-h" || a === "--help") {
            console.log("usage: node peer.mjs [--model-dir DIR] [--types f16,q8_0,q4_0,q4_k] [--threads 1,2]\n" +
                "                     [--reps N] [--decode N] [--batch N] [--files A.gguf,B.gguf] [--tool PATH]\n" +
                "                     [--wait-while PATTERN]");
            process.exit(0);
        } else throw new Error(`unknown argument: ${a}`);
    }
    return args;
}

// Deterministic pseudo-random token ids in [0, vocab) (mulberry32).
function randomTokens(n, vocab, seed) {
    let s = seed >>> 0;
    const out = [];
    for (let i = 0; i < n; i++) {
        s = (s + 0x6D2B79F5) >>> 0;
        let t = s;
        t = Math.imul(t ^ (t >>> 15), t | 1);
        t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
        const r = ((t ^ (t >>> 14)) >>> 0) / 4294967296;
        out.push(Math.floor(r * vocab));
    }
    return out;
}

function median(v) {
    const s = [...v].sort((a, b) => a - b);
    const m = s.length >> 1;
    return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

const now = () => performance.now();
const maxRssMiB = () => process.resourceUsage().maxRSS / 1024; // maxRSS is in KiB

async function importLlama(logLines) {
    const nlc = await import("node-llama-cpp");
    const llama = await nlc.getLlama({
        gpu: false,
        build: "never", // prebuilt binaries only; never compile llama.cpp here
        maxThreads: 0, // no global thread budget: each context uses exactly its `threads`
        logLevel: nlc.LlamaLogLevel.info,
        logger: (level, message) => {
            if (logLines) logLines.push(String(message).trimEnd());
        }
    });
    return {nlc, llama};
}

// --baseline: node + node-llama-cpp imported + getLlama() done, no model.
async function baselineMain() {
    const {llama} = await importLlama(null);
    const pkg = JSON.parse(fs.readFileSync(
        path.join(path.dirname(scriptPath), "node_modules", "node-llama-cpp", "package.json"), "utf8"));
    process.stdout.write(JSON.stringify({
        maxRssMiB: maxRssMiB(),
        version: pkg.version,
        buildType: llama.buildType,
        gpu: llama.gpu,
        llamaCppRelease: llama.llamaCppRelease,
        systemInfo: llama.systemInfo,
        cpuMathCores: llama.cpuMathCores
    }) + "\n");
    await llama.dispose();
}

// `steps` greedy decode steps of every sequence in lockstep: one evaluate()
// generator per sequence (it keeps one sampler per sequence), and every step
// calls next() on all of them in the same tick, so node-llama-cpp queues one
// token of every sequence before it dispatches and decodes them as one
// llama_decode; the next step starts when every sequence has its token. The
// first step decodes firstTokens[i] (the last prompt token), each later one
// the token sampled before it, so `steps` steps are `steps` llama_decode calls.
async function decodeLockstep(seqs, firstTokens, steps) {
    const gens = seqs.map((s, i) => s.evaluate([firstTokens[i]], {temperature: 0, yieldEogToken: true}));
    try {
        for (let step = 0; step < steps; step++) {
            const outs = await Promise.all(gens.map((g) => g.next()));
            if (outs.some((o) => o.done)) throw new Error(`decode: a sequence stopped at step ${step}`);
        }
    } finally {
        await Promise.all(gens.map((g) => g.return()));
    }
}

// Counts the llama_decode calls (and their tokens) a context makes while
// `on`: node-llama-cpp's native context object is frozen, so the context's
// handle to it is replaced by a proxy whose methods stay bound to the real
// object. Used to check that each timed part is the calls it should be.
function countDecodes(ctx) {
    const native = ctx._ctx;
    const counter = {on: false, calls: 0, tokens: 0};
    ctx._ctx = new Proxy(native, {
        get(target, prop) {
            const v = target[prop];
            if (typeof v !== "function") return v;
            if (prop === "initBatch")
                return (size) => {
                    if (counter.on) counter.tokens += size;
                    return v.call(target, size);
                };
            if (prop === "decodeBatch")
                return () => {
                    if (counter.on) counter.calls++;
                    return v.call(target);
                };
            return v.bind(target);
        }
    });
    return counter;
}

// --child FILE THREADS: measures one cell, prints one JSON line.
async function childMain(args) {
    const {file, threads} = args.child;
    const {reps, decode, batch} = args;
    const logLines = [];
    const {llama} = await importLlama(logLines);
    const logStart = logLines.length;

    const t0 = now();
    const model = await llama.loadModel({modelPath: file, gpuLayers: 0, useMmap: true});
    const loadModelMs = now() - t0;
    let ctx = await model.createContext({
        contextSize: 4096, sequences: 1, batchSize: 512, threads, flashAttention: "auto"
    });
    const loadMs = now() - t0;
    if (ctx.currentThreads !== threads)
        throw new Error(`context uses ${ctx.currentThreads} threads, asked for ${threads}`);

    const tensors = model.fileInfo.fullTensorInfo ?? model.fileInfo.tensorInfo;
    const embd = tensors.find((t) => t.name === "token_embd.weight");
    const vocab = Number(embd.dimensions[1]);

    const result = {loadMs, loadModelMs, vocab, contextSize: ctx.contextSize, calls: {}};
    // Timed runs of `body` (run 0 warms up), median of `units` / seconds;
    // `before` is untimed. Records the llama_decode calls of the timed runs.
    const measure = async (key, counter, units, before, body) => {
        const rates = [];
        let cpuUs = 0, wallS = 0;
        counter.calls = counter.tokens = 0;
        for (let r = 0; r <= reps; r++) {
            await before();
            counter.on = r > 0;
            const cpu = process.cpuUsage();
            const t = now();
            await body();
            const s = (now() - t) / 1000;
            const dc = process.cpuUsage(cpu);
            counter.on = false;
            if (r > 0) {
                rates.push(units / s);
                cpuUs += dc.user + dc.system;
                wallS += s;
            }
        }
        result[key] = median(rates);
        // Spread of the timed runs, and this process's CPU time over their
        // wall time: about `threads` when it had its cores (ggml's threads
        // spin while they wait), less when other work took them.
        result.spread ??= {};
        result.spread[key] = [Math.min(...rates), Math.max(...rates)];
        result.cpuPerWall ??= {};
        result.cpuPerWall[key] = cpuUs / 1e6 / wallS;
        result.calls[key] = {calls: counter.calls / reps, tokens: counter.calls ? counter.tokens / counter.calls : 0};
    };

    let counter = countDecodes(ctx);
    const seq = ctx.getSequence();
    for (const n of [64, 512]) {
        const prompt = randomTokens(n, vocab, n);
        await measure(`pp${n}`, counter, n, () => seq.clearHistory(), async () => {
            await seq.evaluateWithoutGeneratingNewTokens(prompt);
            if (seq.nextTokenIndex !== n) throw new Error(`prefill ${n}: sequence holds ${seq.nextTokenIndex} tokens`);
        });
    }
    // Decode b1: `decode` greedy steps after a 16-token prompt; its first 15
    // tokens are prefilled untimed, the timed part starts with the 16th.
    {
        const prompt = randomTokens(16, vocab, 1);
        await measure("tg", counter, decode, async () => {
            await seq.clearHistory();
            await seq.evaluateWithoutGeneratingNewTokens(prompt.slice(0, -1));
        }, () => decodeLockstep([seq], prompt.slice(-1), decode));
    }
    result.peakMiB = maxRssMiB();
    await seq.dispose();
    await ctx.dispose();

    // Decode b`batch`: one context with `batch` sequences generating together.
    ctx = await model.createContext({
        contextSize: 256, sequences: batch, batchSize: 512, threads, flashAttention: "auto"
    });
    counter = countDecodes(ctx);
    const seqs = Array.from({length: batch}, () => ctx.getSequence());
    const prompts = seqs.map((_, i) => randomTokens(12 + i % 8, vocab, 100 + 37 * i));
    await measure("tgBatch", counter, batch * decode, async () => {
        await Promise.all(seqs.map((s) => s.clearHistory()));
        await Promise.all(seqs.map((s, i) => s.evaluateWithoutGeneratingNewTokens(prompts[i].slice(0, -1))));
    }, () => decodeLockstep(seqs, prompts.map((p) => p[p.length - 1]), decode));
    result.peakAfterBatchMiB = maxRssMiB();
    await ctx.dispose();
    await model.dispose();
    await llama.dispose();

    const logs = logLines.slice(logStart);
    const pick = (re) => logs.filter((l) => re.test(l)).map((l) => l.trim());
    result.notes = [...new Set([...pick(/flash_attn|Flash Attention/i), ...pick(/CPU backend|load_backend/i),
        ...pick(/CPU_REPACK|repack/i)])].slice(0, 8);
    process.stdout.write(JSON.stringify(result) + "\n");
}

function runNode(extraArgs) {
    const r = spawnSync(process.execPath, [scriptPath, ...extraArgs], {encoding: "utf8", maxBuffer: 64 << 20});
    if (r.status !== 0) {
        process.stderr.write(r.stdout + r.stderr);
        throw new Error(`child ${extraArgs.join(" ")} exited with ${r.status ?? r.signal}`);
    }
    const lines = r.stdout.trim().split("\n");
    return JSON.parse(lines[lines.length - 1]);
}

// Processes (other than this one and its ancestors) whose command line
// contains `pattern`, from /proc (Linux; elsewhere none).
function processesMatching(pattern) {
    const mine = new Set();
    for (let pid = process.pid; pid > 1;) {
        mine.add(pid);
        try {
            const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8");
            pid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
        } catch {
            break;
        }
    }
    let entries = [];
    try {
        entries = fs.readdirSync("/proc").filter((e) => /^\d+$/.test(e));
    } catch {
        return [];
    }
    const found = [];
    for (const e of entries) {
        if (mine.has(Number(e))) continue;
        try {
            const cmd = fs.readFileSync(`/proc/${e}/cmdline`, "utf8").split("\0").join(" ").trim();
            if (cmd.includes(pattern)) found.push(`${e} ${cmd}`);
        } catch {}
    }
    return found;
}

// --wait-while (repeatable): before each cell, wait (polling every 30 s, at
// most 20 minutes) while another process matching one of the patterns runs,
// so that cells do not overlap with another benchmark on a shared machine.
async function waitWhile(patterns) {
    if (patterns.length === 0) return;
    for (let i = 0; i < 40; i++) {
        const found = patterns.flatMap((p) => processesMatching(p));
        if (found.length === 0) return;
        if (i === 0) console.error(`waiting while ${found[0].slice(0, 120)} runs`);
        await new Promise((r) => setTimeout(r, 30000));
    }
    console.error(`still running after 20 minutes: ${patterns.join(", ")}; going on`);
}

function warmPageCache(file) {
    const fd = fs.openSync(file, "r");
    const buf = Buffer.allocUnsafe(16 << 20);
    try {
        while (fs.readSync(fd, buf, 0, buf.length, null) > 0) {}
    } finally {
        fs.closeSync(fd);
    }
}

async function parentMain(args) {
    let cells;
    if (args.files) {
        cells = args.files.map((f) => ({label: path.basename(f), file: path.resolve(f)}));
    } else {
        cells = args.types.map((t) => ({label: t, file: path.resolve(args.modelDir, `qwen2.5-0.5b-${t}.gguf`), type: t}));
    }
    for (const c of cells) {
        if (fs.existsSync(c.file)) continue;
        if (!c.type || !fs.existsSync(args.tool))
            throw new Error(`${c.file} is missing (write it with: tollgate-model write-random --arch qwen2 ` +
                `--shape qwen2.5-0.5b --type TYPE --out FILE)`);
        fs.mkdirSync(path.dirname(c.file), {recursive: true});
        console.error(`writing ${c.file}`);
        const r = spawnSync(args.tool, ["write-random", "--arch", "qwen2", "--shape", "qwen2.5-0.5b",
            "--type", c.type, "--out", c.file], {stdio: "inherit"});
        if (r.status !== 0) throw new Error(`${args.tool} write-random failed for ${c.type}`);
    }

    const bare = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.resourceUsage().maxRSS))"],
        {encoding: "utf8"});
    const bareMiB = Number(bare.stdout) / 1024;
    const base = runNode(["--baseline"]);

    console.log(`node-llama-cpp ${base.version}, llama.cpp ${base.llamaCppRelease.repo}@${base.llamaCppRelease.release} ` +
        `(${base.buildType} binary, gpu: ${base.gpu}); node ${process.version}; ${os.cpus()[0]?.model ?? "?"}, ` +
        `${os.cpus().length} CPUs`);
    console.log(`ggml: ${String(base.systemInfo).trim()}`);
    console.log(`Baseline peak RSS: bare node ${bareMiB.toFixed(0)} MiB; node + node-llama-cpp imported + getLlama() ` +
        `${base.maxRssMiB.toFixed(0)} MiB (subtracted for "net")`);
    console.log(`Prefill: evaluateWithoutGeneratingNewTokens in one batch (batchSize 512). Decode b1: ${args.decode} greedy ` +
        `steps after a 16-token prompt. Decode b${args.batch}: ${args.batch} sequences of one context (prompts of ` +
        `12-19 tokens), ${args.decode} greedy steps each, aggregate tok/s. Medians of ${args.reps} after one warm-up.`);
    console.log("");

    const rows = [];
    const extra = [];
    for (const c of cells) {
        warmPageCache(c.file);
        for (const t of args.threads) {
            await waitWhile(args.waitWhile);
            const la0 = os.loadavg()[0];
            const r = runNode(["--child", c.file, String(t), "--reps", String(args.reps), "--decode", String(args.decode),
                "--batch", String(args.batch)]);
            r.loadavg = [la0, os.loadavg()[0]];
            rows.push({c, t, r});
            const expected = {pp64: [1, 64], pp512: [1, 512], tg: [args.decode, 1], tgBatch: [args.decode, args.batch]};
            for (const [key, [calls, tokens]] of Object.entries(expected)) {
                const got = r.calls[key];
                if (got.calls !== calls || got.tokens !== tokens)
                    console.error(`warning: ${c.label} t${t} ${key}: ${got.calls} llama_decode calls of ` +
                        `${got.tokens.toFixed(2)} tokens per run, expected ${calls} of ${tokens}`);
            }
            const b = r.calls.tgBatch;
            const keys = {pp64: "pp64", pp512: "pp512", tg: "b1", tgBatch: `b${args.batch}`};
            const spread = Object.entries(keys).map(([k, name]) =>
                `${name} ${r.spread[k].map((x) => x.toFixed(1)).join("-")}`).join(", ");
            const cpu = Object.entries(keys).map(([k, name]) => `${name} ${r.cpuPerWall[k].toFixed(2)}`).join(", ");
            extra.push(`${c.label} t${t}: loadavg ${r.loadavg.map((x) => x.toFixed(2)).join(" -> ")}; ` +
                `timed runs min-max tok/s: ${spread}; CPU time / wall time: ${cpu}`);
            extra.push(`${c.label} t${t}: load = loadModel ${r.loadModelMs.toFixed(0)} ms + createContext ` +
                `${(r.loadMs - r.loadModelMs).toFixed(0)} ms; peak RSS after b${args.batch} ${r.peakAfterBatchMiB.toFixed(0)} MiB; ` +
                `llama_decode calls per timed run: pp64 ${r.calls.pp64.calls}, pp512 ${r.calls.pp512.calls}, ` +
                `b1 ${r.calls.tg.calls}, b${args.batch} ${b.calls} of ${b.tokens.toFixed(2)} tokens` +
                (r.notes.length ? `; log: ${r.notes.join(" | ")}` : ""));
            console.error(`done ${c.label} t${t}`);
        }
    }
    const f0 = (x) => x.toFixed(0);
    const f1 = (x) => x.toFixed(1);
    console.log(`| type | threads | load | peak RSS | prefill 64 | prefill 512 | decode b1 | decode b${args.batch} aggregate |`);
    console.log("|---|---|---|---|---|---|---|---|");
    for (const {c, t, r} of rows) {
        console.log(`| ${c.label} | ${t} | ${f0(r.loadMs)} ms | ${f0(r.peakMiB)} MiB (${f0(r.peakMiB - base.maxRssMiB)} net) ` +
            `| ${f1(r.pp64)} tok/s | ${f1(r.pp512)} tok/s | ${f1(r.tg)} tok/s | ${f1(r.tgBatch)} tok/s |`);
    }
    console.log("");
    console.log("Per cell: 1-minute load average before -> after the cell; spread of the timed runs; the child's CPU " +
        "time over wall time in them (about the thread count when the cell had its cores); load split; llama_decode calls.");
    for (const e of extra) console.log(e);
}

const args = parseArgs(process.argv.slice(2));
if (args.baseline) await baselineMain();
else if (args.child) await childMain(args);
else await parentMain(args);
