#!/usr/bin/env python3
"""Issue 8's table: the CUDA backend (tollgate_cuda_bench --json) beside the
PyTorch peer (torch_peer.py --json), eager and with CUDA graphs, and the ratio
to the better of the two; llama.cpp's CUDA build when a llama-bench binary is
found. Markdown on stdout.

  merge.py --ours OURS.json --peer TORCH.json [--llama-bench PATH]

Rows per model file: decode b1 tok/s (with its share of the bandwidth bound:
bytes read per token over the device-to-device copy bandwidth of the same run,
read + written), prefill tok/s, TTFT ms, aggregate decode tok/s at each
concurrency. Ratio: Tollgate / best torch for rates; best torch / Tollgate for
TTFT (a time), so above 1.0x means Tollgate is ahead in every row. Then the
issue's targets, each with its numbers. Missing numbers (a row that failed, a
file that timed out) print as "-". Needs only the Python standard library.

llama.cpp: llama-bench (--llama-bench, $LLAMA_BENCH or the PATH) runs on the
same files with every layer on the GPU (-ngl 99, -p PREFILL -n DECODE -r 3),
for the b1 decode and prefill rows; it has no concurrent-sequence mode (that
is llama-batched-bench), so "-" elsewhere. Without it the column says
"not present".
"""
import argparse
import json
import math
import os
import shutil
import subprocess
import sys


def load(path):
    if not path or not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        print(f"cannot read {path}: {e}", file=sys.stderr)
        return None


def num(v):
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def fmt(v, digits=1):
    v = num(v)
    return "-" if v is None else f"{v:,.{digits}f}"


def ratio(a, b):
    a, b = num(a), num(b)
    return a / b if a is not None and b else None


def fmt_ratio(r):
    return "-" if r is None else f"{r:.2f}x"


def llama_bench(binary, path, prefill, decode):
    """{'pp': tok/s, 'tg': tok/s} from llama-bench -o json, or {}."""
    try:
        out = subprocess.run([binary, "-m", path, "-ngl", "99", "-p", str(prefill), "-n", str(decode), "-r", "3",
                              "-o", "json"], capture_output=True, text=True, timeout=300)
        res = {}
        for r in json.loads(out.stdout):
            key = "tg" if r.get("n_gen", 0) > 0 else "pp"
            res[key] = r.get("avg_ts")
        return res
    except (OSError, ValueError, subprocess.SubprocessError) as e:
        print(f"llama-bench on {path} failed: {e}", file=sys.stderr)
        return {}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ours", required=True)
    p.add_argument("--peer", required=True)
    p.add_argument("--llama-bench", default=os.environ.get("LLAMA_BENCH") or shutil.which("llama-bench"))
    args = p.parse_args()
    ours, peer = load(args.ours), load(args.peer)
    if ours is None:
        print(f"no benchmark results ({args.ours} missing or unreadable)")
        return 1
    peer = peer or {"rows": []}
    llama = args.llama_bench if args.llama_bench and os.access(args.llama_bench, os.X_OK) else None

    conc = ours.get("concurrency") or [1, 8, 32, 64]
    prefill_n = ours.get("prefill_tokens", 512)
    print("## Tollgate CUDA backend vs PyTorch on the same GGUF files (issue 8)\n")
    print(f"- device: {ours.get('device', '?')}; torch {peer.get('torch_version', 'not run')} "
          f"({peer.get('dtype', '-')} weights, quantized files dequantized at load)")
    print(f"- copy bandwidth (device-to-device, bytes read + written): {fmt(ours.get('copy_bandwidth_GBps'), 0)} GB/s "
          f"(ours), {fmt(peer.get('copy_bandwidth_GBps'), 0)} GB/s (torch); bound = that / (weight + KV bytes read "
          f"per decode token)")
    print(f"- prefill {prefill_n} tokens; TTFT = prefill + first decode step; decode: "
          f"{ours.get('decode_tokens', '?')} steps after a {ours.get('prompt_tokens', '?')}-token prompt, every "
          f"sequence's logits to host memory each step; medians of {ours.get('reps', '?')} runs"
          + (" (--quick)" if ours.get("quick") else ""))
    if peer.get("decode_tokens") not in (None, ours.get("decode_tokens")) or peer.get("reps") not in (None, ours.get("reps")):
        print(f"- NOTE: the peer ran {peer.get('decode_tokens')} decode steps, {peer.get('reps')} runs")
    print("- ratio: Tollgate / best torch (TTFT: best torch / Tollgate), so > 1.00x = Tollgate ahead")
    print(f"- llama.cpp CUDA: {('llama-bench ' + llama) if llama else 'not present (no llama-bench binary)'}\n")

    print("| model | type | metric | Tollgate | torch eager | torch graphs | Tollgate / best torch | llama.cpp CUDA |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    peer_rows = {(r.get("shape"), r.get("type"), r.get("mode")): r for r in peer.get("rows", [])}
    below = []  # rows under 1.0x
    targets = []
    sanity = []  # same function: argmax and norm of the prefill logits
    for row in ours.get("rows", []):
        shape, typ = row.get("shape"), row.get("type")
        eager = peer_rows.get((shape, typ, "eager"), {})
        graphs = peer_rows.get((shape, typ, "graphs"), {})
        eager = eager if eager.get("ok") else {}
        graphs = graphs if graphs.get("ok") else {}
        lb = llama_bench(llama, row["file"], prefill_n, ours.get("decode_tokens", 128)) if llama and row.get("ok") else {}
        if not row.get("ok"):
            print(f"| {shape} | {typ} | failed: {row.get('error', '?')} | | | | | |")
            continue

        def line(metric, key, digits=1, lower_better=False, sub=None, llama_key=None, note=""):
            def get(r):
                return (r.get(key) or {}).get(sub) if sub is not None else r.get(key)
            a, e, g = get(row), get(eager), get(graphs)
            cands = [x for x in (num(e), num(g)) if x is not None]
            best = (min(cands) if lower_better else max(cands)) if cands else None
            r = ratio(best, a) if lower_better else ratio(a, best)
            if r is not None and r < 1.0:
                below.append(f"{shape} {typ} {metric} ({r:.2f}x)")
            if llama:
                lcell = fmt(lb.get(llama_key)) if llama_key else "-"
            else:
                lcell = "not present"
            print(f"| {shape} | {typ} | {metric} | {fmt(a, digits)}{note} | {fmt(e, digits)} | {fmt(g, digits)} | "
                  f"{fmt_ratio(r)} | {lcell} |")
            return r

        share = num(row.get("bound_share"))
        note = f" ({share * 100:.0f}% of bound)" if share is not None else ""
        line("decode b1 (1 seq) tok/s", "decode_tokens_per_s", note=note, llama_key="tg")
        line(f"prefill {prefill_n} tok/s", "prefill_tokens_per_s", digits=0, llama_key="pp")
        line("TTFT ms", "ttft_ms", digits=1, lower_better=True)
        for c in conc:
            if c != 1:  # 1 sequence is the b1 row
                line(f"decode {c} seq tok/s", "aggregate_tokens_per_s", sub=str(c))
        best_peer = graphs or eager
        if best_peer:
            same = best_peer.get("prefill_argmax") == row.get("prefill_argmax")
            sanity.append(f"{shape} {typ}: prefill argmax {row.get('prefill_argmax')} (ours) vs "
                          f"{best_peer.get('prefill_argmax')} (torch): {'same' if same else 'DIFFERENT'}; "
                          f"logits norm {fmt(row.get('prefill_logits_norm'), 2)} vs "
                          f"{fmt(best_peer.get('prefill_logits_norm'), 2)}"
                          + ("" if best_peer.get("logits_finite", True) else "; torch logits NOT finite"))
        if shape == "qwen2.5-7b":
            agg = row.get("aggregate_tokens_per_s") or {}
            targets.append((typ, share, ratio(agg.get(str(max(conc))), row.get("decode_tokens_per_s"))))

    print("\n### Targets\n")
    if not targets:
        print("- 7B rows: none measured")
    for typ, share, scale in targets:
        s = "-" if share is None else f"{share * 100:.0f}%"
        print(f"- 7B {typ}: b1 decode at {s} of the bandwidth bound (target >= 70%: "
              f"{'met' if share is not None and share >= 0.70 else 'NOT met'}); {max(conc)} sequences at "
              f"{fmt_ratio(scale)} the b1 throughput (target >= 20x: "
              f"{'met' if scale is not None and scale >= 20 else 'NOT met'})")
    if not peer.get("rows"):
        print("- >= 1.0x the PyTorch peer at every row: no peer results")
    elif below:
        print(f"- >= 1.0x the PyTorch peer at every row: NOT met in {len(below)} rows: " + "; ".join(below))
    else:
        print("- >= 1.0x the PyTorch peer at every row: met in every row with both numbers")
    if sanity:
        print(f"\n### Same function (prefill logits of the {prefill_n}-token prompt; precisions differ)\n")
        for line_ in sanity:
            print(f"- {line_}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
