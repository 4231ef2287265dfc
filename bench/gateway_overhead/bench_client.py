#!/usr/bin/env python3
"""Measuring client of bench/gateway_overhead.sh (issue 12), standard library only.

Subcommands (each prints machine-readable `RESULT key=value ...` / TSV lines on stdout,
progress on stderr):

  stream    streams through several targets, interleaved, at a fixed concurrency; per stream
            the time to the first content chunk, the gaps between content chunks and the chunks
            held back; one TSV line of statistics per target.
  scale     N concurrent streams through one target; once every stream has its first chunk,
            the target's VmRSS and open fds, and its CPU time so far; /healthz probed all along
            (by `health` in a process of its own); then waits for the streams to end.
  health    GET /healthz every 200 ms until SIGTERM, then one RESULT line.
  calls     exactly N POSTs, one keep-alive connection, one after the other (callgrind).
  start     starts a command N times, polls GET /readyz every 2 ms on one port until it answers
            200, waits, reads the process's VmRSS, stops it (SIGTERM, by PID).

Content chunks are recognized by the mock's content tokens `Tok00` .. `Tok99` in the decoded
response body, whatever the wire format around them (OpenAI chunks, or Anthropic
content_block_delta events when Tollgate translates): a content chunk "arrived" at the time of
the read (recv) that completed its token.
"""

import argparse
import asyncio
import os
import re
import resource
import signal
import socket
import subprocess
import sys
import time

TOKEN = re.compile(rb"Tok\d\d")
now_ns = time.monotonic_ns


def log(*a):
    print("bench_client:", *a, file=sys.stderr, flush=True)


def raise_nofile():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def pct(values, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, int(-(-p * len(s) // 100)) - 1))
    return s[k]


def request_bytes(port, path, body, key, anthropic, close=True, method="POST"):
    head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    if method == "POST":
        head.append("Content-Type: application/json")
        head.append(f"Content-Length: {len(body)}")
    if key:
        head.append(f"Authorization: Bearer {key}")
    if anthropic:
        head.append("anthropic-version: 2023-06-01")
    if close:
        head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + (body if method == "POST" else b"")


class HttpResponse:
    """Incremental HTTP/1.1 response parser (status, Content-Length / chunked / until close)."""

    def __init__(self):
        self.buf = b""
        self.status = None
        self.headers_done = False
        self.body = bytearray()
        self.length = None  # Content-Length, or None
        self.chunked = False
        self.chunk_left = 0  # bytes of the current chunk still to come; -1: reading a size line
        self.complete = False
        self.error = None

    def feed(self, data):
        """Adds bytes; returns the body bytes decoded from them."""
        self.buf += data
        out = bytearray()
        if not self.headers_done:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return out
            head = self.buf[:end].decode("latin-1").split("\r\n")
            self.buf = self.buf[end + 4:]
            try:
                self.status = int(head[0].split()[1])
            except (IndexError, ValueError):
                self.error = "bad status line"
                self.complete = True
                return out
            for line in head[1:]:
                name, _, value = line.partition(":")
                name = name.strip().lower()
                value = value.strip()
                if name == "content-length":
                    self.length = int(value)
                elif name == "transfer-encoding" and "chunked" in value.lower():
                    self.chunked = True
            self.headers_done = True
            self.chunk_left = -1
        if self.chunked:
            while self.buf and not self.complete:
                if self.chunk_left == -1:
                    end = self.buf.find(b"\r\n")
                    if end < 0:
                        break
                    size = int(self.buf[:end].split(b";")[0], 16)
                    self.buf = self.buf[end + 2:]
                    if size == 0:
                        self.complete = True  # trailers are not used here
                        break
                    self.chunk_left = size
                elif self.chunk_left == 0:  # the CRLF after a chunk
                    if len(self.buf) < 2:
                        break
                    self.buf = self.buf[2:]
                    self.chunk_left = -1
                else:
                    take = self.buf[:self.chunk_left]
                    self.buf = self.buf[len(take):]
                    self.chunk_left -= len(take)
                    out += take
        else:
            out += self.buf
            self.buf = b""
            if self.length is not None and len(self.body) + len(out) >= self.length:
                self.complete = True
        self.body += out
        return out


class Stream(asyncio.Protocol):
    """One streamed call on its own connection (Connection: close)."""

    def __init__(self, request, on_first=None):
        self.request = request
        self.resp = HttpResponse()
        self.t_sent = None
        self.reads = 0
        self.chunks = []  # (time_ns, read_index) per content token, in order
        self.scanned = 0
        self.done = asyncio.get_running_loop().create_future()
        self.on_first = on_first
        self.transport = None

    def connection_made(self, transport):
        self.transport = transport
        transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.t_sent = now_ns()
        transport.write(self.request)

    def data_received(self, data):
        t = now_ns()
        self.reads += 1
        decoded = self.resp.feed(data)
        if decoded:
            body = self.resp.body
            start = max(0, self.scanned - 4)  # a token split across reads
            first = not self.chunks
            for m in TOKEN.finditer(body, start):
                if m.end() > self.scanned:
                    self.chunks.append((t, self.reads))
            self.scanned = len(body)
            if first and self.chunks and self.on_first:
                self.on_first(self)
        if self.resp.complete:
            self.transport.close()

    def connection_lost(self, exc):
        if not self.done.done():
            self.done.set_result(exc)


async def one_stream(port, request, timeout_s, on_first=None):
    loop = asyncio.get_running_loop()
    try:
        _, proto = await asyncio.wait_for(
            loop.create_connection(lambda: Stream(request, on_first), "127.0.0.1", port), timeout_s)
    except (OSError, asyncio.TimeoutError) as e:
        return None, f"connect: {e!r}"
    try:
        await asyncio.wait_for(asyncio.shield(proto.done), timeout_s)
    except asyncio.TimeoutError:
        proto.transport.abort()
        return proto, "timeout"
    r = proto.resp
    if r.error:
        return proto, r.error
    if r.status != 200:
        return proto, f"HTTP {r.status}: {bytes(r.body[:200])!r}"
    if not r.complete and (r.chunked or r.length is not None):
        return proto, "connection closed before the end of the response"
    # A stream that ended well ends with the API's own end marker (OpenAI `data: [DONE]`,
    # Anthropic `message_stop`), not with an error event.
    if b"data: [DONE]" not in r.body[-64:] and b"message_stop" not in r.body[-160:]:
        return proto, f"stream without its end marker, ending {bytes(r.body[-160:])!r}"
    return proto, None


# ------------------------------------------------------------------------------------ stream
async def stream_cmd(a):
    key = os.environ.get("BENCH_KEY", "")
    targets = []
    for name, port, path, body_file, anth in a.target:
        with open(body_file, "rb") as f:
            body = f.read().strip()
        targets.append((name, int(port), request_bytes(int(port), path, body, key, anth == "1")))
    stats = {t[0]: {"ttft": [], "gaps": [], "held": 0, "streams": 0, "errors": 0, "bad_chunks": 0,
                    "err_examples": []} for t in targets}
    per_slice = -(-a.count // a.slices)
    for s in range(a.slices):
        n = min(per_slice, a.count - s * per_slice)
        if n <= 0:
            break
        for k in range(len(targets)):
            name, port, req = targets[(k + s) % len(targets)]
            st = stats[name]
            queue = list(range(n))

            async def worker():
                while queue:
                    queue.pop()
                    proto, err = await one_stream(port, req, a.timeout)
                    st["streams"] += 1
                    if err:
                        st["errors"] += 1
                        if len(st["err_examples"]) < 3:
                            st["err_examples"].append(err)
                        continue
                    ch = proto.chunks
                    if len(ch) != a.chunks:
                        st["bad_chunks"] += 1
                        if len(st["err_examples"]) < 3:
                            st["err_examples"].append(f"{len(ch)} content chunks, expected {a.chunks}")
                    if not ch:
                        continue
                    st["ttft"].append(ch[0][0] - proto.t_sent)
                    for i in range(len(ch) - 1):
                        gap = ch[i + 1][0] - ch[i][0]
                        st["gaps"].append(gap)
                        if ch[i + 1][1] == ch[i][1] or gap < a.held_ms * 1_000_000:
                            st["held"] += 1

            await asyncio.gather(*(worker() for _ in range(min(a.concurrency, n))))
        log(f"concurrency {a.concurrency}: slice {s + 1}/{a.slices} done")
    for name, _, _ in targets:
        st = stats[name]
        for e in st["err_examples"]:
            log(f"{name}: {e}")
        t, g = st["ttft"], st["gaps"]
        f = lambda v: f"{v / 1000:.0f}"
        print("\t".join([name, str(a.concurrency), str(st["streams"]), str(st["errors"]), str(st["bad_chunks"]),
                         f(pct(t, 50)) if t else "", f(pct(t, 99)) if t else "",
                         f(pct(g, 50)) if g else "", f(pct(g, 99)) if g else "", str(st["held"]), str(len(g))]),
              flush=True)


# ------------------------------------------------------------------------------------ scale
def proc_kb(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def health_cmd(a):
    """GET /healthz every --interval seconds, one connection each, until SIGTERM; then one RESULT line.
    Its own process, so the scale client's busy event loop does not add to the latencies."""
    req = request_bytes(a.port, "/healthz", b"", "", False, method="GET")
    ok_us, failed = [], 0
    try:
        while True:
            t0 = now_ns()
            why = None
            try:
                with socket.create_connection(("127.0.0.1", a.port), timeout=a.timeout) as s:
                    s.sendall(req)
                    data = b""
                    while True:
                        d = s.recv(4096)
                        if not d:
                            break
                        data += d
                if not data.startswith(b"HTTP/1.1 200"):
                    why = f"answer {data[:40]!r}"
            except OSError as e:
                why = repr(e)
            took = now_ns() - t0
            if why is None:
                ok_us.append(took // 1000)
            else:
                failed += 1
                if failed <= 5:
                    log(f"/healthz failed after {took / 1e6:.0f} ms: {why}")
            time.sleep(a.interval)
    except SystemExit:
        pass
    finally:
        print(f"RESULT health_ok={len(ok_us)} health_failed={failed} "
              f"health_p50_us={pct(ok_us, 50) if ok_us else -1} health_p99_us={pct(ok_us, 99) if ok_us else -1} "
              f"health_max_us={max(ok_us) if ok_us else -1}", flush=True)


def cpu_s(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def scale_cmd(a):
    global child
    raise_nofile()
    key = os.environ.get("BENCH_KEY", "")
    with open(a.body, "rb") as f:
        body = f.read().strip()
    req = request_bytes(a.port, a.path, body, key, False)
    rss_before = proc_kb(a.pid, "VmRSS")
    fds_before = fd_count(a.pid)
    first = [0]
    all_first = asyncio.Event()
    gate = asyncio.Semaphore(a.opening)  # streams opened but without their first chunk yet

    def on_first(proto):
        first[0] += 1
        gate.release()
        proto.got_first = True
        if first[0] == a.n:
            all_first.set()

    probe = subprocess.Popen([sys.executable, os.path.abspath(__file__), "health", "--port", str(a.health_port)],
                             stdout=subprocess.PIPE, text=True)
    child = probe  # stopped by PID on any failure (main)
    results = {"complete": 0, "errors": 0, "bad_chunks": 0, "ended_after_first": 0}
    examples = []

    async def one():
        await gate.acquire()
        proto, err = await one_stream(a.port, req, a.timeout, on_first)
        if proto is None or not getattr(proto, "got_first", False):
            gate.release()
        else:
            results["ended_after_first"] += 1
        if err:
            results["errors"] += 1
            if len(examples) < 5:
                examples.append(err)
        elif len(proto.chunks) != a.chunks:
            results["bad_chunks"] += 1
            if len(examples) < 5:
                examples.append(f"{len(proto.chunks)} content chunks, expected {a.chunks}")
        else:
            results["complete"] += 1

    t0 = now_ns()
    cpu0 = cpu_s(a.pid)
    tasks = [asyncio.create_task(one()) for _ in range(a.n)]
    waiter = asyncio.create_task(all_first.wait())
    last = -1
    while not all_first.is_set():
        done, _ = await asyncio.wait([waiter], timeout=2)
        if all(t.done() for t in tasks):
            break
        if now_ns() - t0 > a.open_timeout * 1e9:
            log(f"only {first[0]} of {a.n} streams had their first chunk after {a.open_timeout} s")
            break
        if first[0] != last:
            log(f"{first[0]} of {a.n} streams open (first chunk received)")
            last = first[0]
    t_open = (now_ns() - t0) / 1e9
    cpu_open = cpu_s(a.pid) - cpu0
    await asyncio.sleep(0.5)  # let the I/O settle before reading the numbers
    rss_open = proc_kb(a.pid, "VmRSS")
    fds_open = fd_count(a.pid)
    # Streams that already ended (the first ones, if opening took longer than a stream lasts)
    # are not open any more: only those count for the memory per open stream.
    open_now = first[0] - results["ended_after_first"]
    log(f"{first[0]} streams had their first chunk after {t_open:.1f} s, {open_now} of them still open: "
        f"VmRSS {rss_open} kB, {fds_open} fds")
    await asyncio.gather(*tasks)
    t_all = (now_ns() - t0) / 1e9
    cpu_all = cpu_s(a.pid) - cpu0
    probe.send_signal(signal.SIGTERM)
    health = probe.communicate(timeout=30)[0].strip().split("\n")[-1]
    child = None
    await asyncio.sleep(1.0)
    rss_after = proc_kb(a.pid, "VmRSS")
    fds_after = fd_count(a.pid)
    for e in examples:
        log(f"stream error: {e}")
    if not health.startswith("RESULT "):
        raise SystemExit("no RESULT from the /healthz prober")
    print(f"RESULT n={a.n} first={first[0]} open={open_now} open_s={t_open:.2f} all_s={t_all:.2f} cpu_open_s={cpu_open:.2f} "
          f"cpu_all_s={cpu_all:.2f} rss_before_kb={rss_before} "
          f"rss_open_kb={rss_open} rss_after_kb={rss_after} fds_before={fds_before} fds_open={fds_open} "
          f"fds_after={fds_after} complete={results['complete']} errors={results['errors']} "
          f"bad_chunks={results['bad_chunks']} {health[len('RESULT '):]}", flush=True)


# ------------------------------------------------------------------------------------ calls
def calls_cmd(a):
    key = os.environ.get("BENCH_KEY", "")
    with open(a.body, "rb") as f:
        body = f.read().strip()
    req = request_bytes(a.port, a.path, body, key, a.anthropic, close=False)
    s = socket.create_connection(("127.0.0.1", a.port), timeout=60)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    failed = 0
    t0 = time.monotonic()
    for i in range(a.n):
        s.sendall(req)
        r = HttpResponse()
        while not r.complete:
            data = s.recv(65536)
            if not data:
                raise SystemExit(f"connection closed after {i} calls")
            r.feed(data)
            if r.headers_done and not r.chunked and r.length is None:
                raise SystemExit("response without length on a keep-alive connection")
        if r.status != 200:
            failed += 1
            if failed <= 3:
                log(f"call {i}: HTTP {r.status}: {bytes(r.body[:200])!r}")
    s.close()
    print(f"RESULT calls={a.n} failed={failed} seconds={time.monotonic() - t0:.2f}", flush=True)
    if failed:
        sys.exit(1)


# ------------------------------------------------------------------------------------ start
child = None


def start_cmd(a):
    global child
    ready_ms, rss_kb = [], []
    req = request_bytes(a.port, "/readyz", b"", "", False, method="GET")
    for run in range(a.runs):
        t0 = time.monotonic()
        child = subprocess.Popen(a.command, stdout=a.log, stderr=subprocess.STDOUT, start_new_session=True)
        ready = None
        while ready is None:
            if child.poll() is not None:
                raise SystemExit(f"run {run + 1}: the command exited with status {child.returncode} before ready")
            if time.monotonic() - t0 > a.timeout:
                raise SystemExit(f"run {run + 1}: not ready within {a.timeout} s")
            try:
                with socket.create_connection(("127.0.0.1", a.port), timeout=2) as s:
                    s.sendall(req)
                    data = s.recv(64)
                    if data.startswith(b"HTTP/1.1 200"):
                        ready = time.monotonic() - t0
            except OSError:
                pass
            if ready is None:
                time.sleep(0.002)
        time.sleep(a.settle)
        rss = proc_kb(child.pid, "VmRSS")
        ready_ms.append(ready * 1000)
        rss_kb.append(rss)
        log(f"start {run + 1}: ready after {ready * 1000:.1f} ms, idle VmRSS {rss} kB (after {a.settle} s)")
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(20)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        child = None
    print(f"RESULT runs={a.runs} ready_ms_p50={pct(ready_ms, 50):.1f} ready_ms_max={max(ready_ms):.1f} "
          f"rss_kb_p50={pct(rss_kb, 50)} rss_kb_max={max(rss_kb)}", flush=True)


def on_term(signum, frame):
    raise SystemExit(128 + signum)


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("stream")
    s.add_argument("--target", nargs=5, action="append", required=True,
                   metavar=("NAME", "PORT", "PATH", "BODY_FILE", "ANTHROPIC"))
    s.add_argument("--concurrency", type=int, default=1)
    s.add_argument("--count", type=int, default=200, help="streams per target")
    s.add_argument("--slices", type=int, default=5, help="targets interleaved in this many slices")
    s.add_argument("--chunks", type=int, default=64, help="content chunks the mock sends")
    s.add_argument("--held-ms", type=float, default=2.0)
    s.add_argument("--timeout", type=float, default=30)
    c = sub.add_parser("scale")
    c.add_argument("--port", type=int, required=True)
    c.add_argument("--path", required=True)
    c.add_argument("--body", required=True)
    c.add_argument("--n", type=int, required=True)
    c.add_argument("--pid", type=int, required=True)
    c.add_argument("--health-port", type=int, required=True)
    c.add_argument("--chunks", type=int, required=True)
    c.add_argument("--opening", type=int, default=256, help="streams opening at once")
    c.add_argument("--open-timeout", type=float, default=120)
    c.add_argument("--timeout", type=float, default=180)
    h = sub.add_parser("health")
    h.add_argument("--port", type=int, required=True)
    h.add_argument("--interval", type=float, default=0.2)
    h.add_argument("--timeout", type=float, default=10)
    k = sub.add_parser("calls")
    k.add_argument("--port", type=int, required=True)
    k.add_argument("--path", required=True)
    k.add_argument("--body", required=True)
    k.add_argument("--anthropic", action="store_true")
    k.add_argument("--n", type=int, required=True)
    t = sub.add_parser("start")
    t.add_argument("--port", type=int, required=True)
    t.add_argument("--runs", type=int, default=5)
    t.add_argument("--settle", type=float, default=1.0)
    t.add_argument("--timeout", type=float, default=30)
    t.add_argument("--log", type=argparse.FileType("ab"), required=True)
    t.add_argument("command", nargs=argparse.REMAINDER)
    a = p.parse_args()
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    try:
        if a.cmd == "stream":
            asyncio.run(stream_cmd(a))
        elif a.cmd == "scale":
            asyncio.run(scale_cmd(a))
        elif a.cmd == "health":
            health_cmd(a)
        elif a.cmd == "calls":
            calls_cmd(a)
        elif a.cmd == "start":
            if a.command and a.command[0] == "--":
                a.command = a.command[1:]
            start_cmd(a)
    finally:
        if child is not None and child.poll() is None:  # stopped by PID, never left behind
            child.kill()
            child.wait()


if __name__ == "__main__":
    main()
