"""Gateway benchmark against the zero-compute fake worker, loopback only, a few minutes at most.

    .venv/bin/python bench/gateway.py [--waiters 10000] [--quick]

Prints three tables:
1. relay overhead — round trip of an 85 KB duplex ``audio_chunk`` (1 s of float32 PCM, base64;
   the fake worker echoes it back in its ``result``) through the gateway vs straight to the same
   worker, at 1 session and at 20 sessions × 20 chunks/s (p50/p99);
2. queue scale — N waiting WebSocket clients (a separate process) behind one busy worker:
   enqueue rate, gateway RSS per waiter, the longest gap between two queue updates of one waiter,
   and whether positions are contiguous;
3. dispatch latency — from the end of a session to the next client's ``queue_done``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.gateway_load import audio_chunk, dispatch_rounds, pct, raise_nofile, relay_round, rss  # noqa: E402
from tests.support.gateway_procs import free_port, start_gateway, wait_ready  # noqa: E402

import websockets  # noqa: E402


# ---------------------------------------------------------------- 1. relay overhead
async def relay_overhead(tmp: Path, quick: bool) -> list[tuple]:
    sessions = 20
    ports = [free_port() for _ in range(sessions)]
    fw = subprocess.Popen([sys.executable, "-m", "tests.support.fake_worker", "--ports", ",".join(map(str, ports)),
                           "--echo"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    g = start_gateway(tmp, urls, sessions)
    frame = audio_chunk()
    rows = []
    try:
        n1 = 100 if quick else 300
        for label, conc, per_s, n in (("1 session", 1, 0, n1), (f"{sessions} sessions x 20 chunks/s", sessions, 20,
                                                                  40 if quick else 100)):
            res = await relay_round(g.ws, ports, conc, per_s, n, frame, "b")
            d, gw = res["direct"], res["gateway"]
            rows.append((label, len(gw), pct(d, 50), pct(gw, 50), pct(gw, 50) - pct(d, 50),
                         pct(d, 99), pct(gw, 99), pct(gw, 99) - pct(d, 99)))
    finally:
        g.stop()
        fw.terminate()
        fw.wait()
    return rows


# ------------------------------------------------------------------ 2. queue scale
CLIENT_SCRIPT = r"""
import asyncio, json, resource, sys, time
import websockets
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE); resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
url, n, hold = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
state = {}
async def one(i, sem, conns):
    async with sem:
        ws = await websockets.connect(f"{url}/ws/duplex/omni_q{i}", ping_interval=None, compression=None,
                                      open_timeout=120, close_timeout=1)
        m = json.loads(await ws.recv())
        state[i] = {"pos": m["position"], "times": [time.monotonic()], "t_queued": time.monotonic()}
    conns.append(ws)
    async for raw in ws:
        m = json.loads(raw)
        s = state[i]; s["times"].append(time.monotonic())
        if m["type"] == "queue_update": s["pos"] = m["position"]
async def main():
    sem = asyncio.Semaphore(256); conns = []
    t0 = time.monotonic()
    tasks = [asyncio.create_task(one(i, sem, conns)) for i in range(n)]
    while len(state) < n:
        await asyncio.sleep(0.01)
    t1 = time.monotonic()
    print(json.dumps({"phase": "enqueued", "seconds": t1 - t0}), flush=True)
    await asyncio.to_thread(sys.stdin.readline)   # the parent measures RSS meanwhile; then hold
    t_hold = time.monotonic()
    lag = []
    async def lagmon():
        while True:
            t = time.monotonic(); await asyncio.sleep(0.05); lag.append((round(t - t_hold, 2), round(time.monotonic() - t - 0.05, 3)))
    lm = asyncio.create_task(lagmon())
    await asyncio.sleep(hold)
    lm.cancel()
    t_end = time.monotonic()
    gaps = []
    worst = max(state.values(), key=lambda s: max(b - a for a, b in zip(s["times"], s["times"][1:] + [t_end])))
    print(json.dumps({"phase": "debug", "worst": [round(t - t_hold, 2) for t in worst["times"]], "client_lag": sorted(lag, key=lambda x: -x[1])[:5]}), flush=True)
    for s in state.values():
        before = [t for t in s["times"] if t < t_hold]
        ts = before[-1:] + [t for t in s["times"] if t >= t_hold] + [t_end]
        gaps.append(max(b - a for a, b in zip(ts, ts[1:])))
    pos = sorted(s["pos"] for s in state.values())
    print(json.dumps({"phase": "done", "max_gap": max(gaps), "p99_gap": sorted(gaps)[int(0.99 * len(gaps))],
                      "contiguous": pos == list(range(1, n + 1)), "min_pos": pos[0], "max_pos": pos[-1]}), flush=True)
    for t in tasks: t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
asyncio.run(main())
"""


async def queue_scale(tmp: Path, n: int, hold: float) -> dict:
    port = free_port()
    fw = subprocess.Popen([sys.executable, "-m", "tests.support.fake_worker", "--port", str(port)], cwd=REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    g = start_gateway(tmp, [f"http://127.0.0.1:{port}"], 0,
                      {"OMNISERVE_GATEWAY__MAX_QUEUE_SIZE": str(n + 10), "OMNISERVE_GATEWAY__HEALTH_INTERVAL_S": "2",
                       # every waiter comes from 127.0.0.1: lift the per-address caps for this load
                       "OMNISERVE_GATEWAY__EDGE__MAX_WS_PER_IP": str(n + 10),
                       "OMNISERVE_GATEWAY__EDGE__MAX_QUEUED_PER_IP": str(n + 10)})
    try:
        wait_ready(g, 1)
        holder = await websockets.connect(g.ws + "/ws/duplex/omni_holder", ping_interval=None)
        assert json.loads(await holder.recv())["type"] == "queue_done"
        await holder.send('{"type":"prepare"}')
        await holder.recv()
        await asyncio.sleep(1.0)
        rss0 = rss(g.proc.pid)
        gproc = psutil.Process(g.proc.pid)
        cpu0 = sum(gproc.cpu_times()[:2])
        script = tmp / "clients.py"
        script.write_text(CLIENT_SCRIPT)
        cl = subprocess.Popen([sys.executable, str(script), g.ws, str(n), str(hold)], cwd=REPO, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        first = json.loads(await asyncio.to_thread(cl.stdout.readline))
        cpu_enqueue = sum(gproc.cpu_times()[:2]) - cpu0
        await asyncio.sleep(2.5)  # let a periodic broadcast pass before measuring memory
        rss1 = rss(g.proc.pid)
        import httpx
        q = httpx.get(g.url + f"/api/queue?limit={n}", timeout=30, trust_env=False).json()
        rest_ok = [it["position"] for it in q["items"]] == list(range(1, n + 1))
        cl.stdin.write("go\n")
        cl.stdin.flush()
        while True:
            line = await asyncio.to_thread(cl.stdout.readline)
            try:
                done = json.loads(line)
            except ValueError:
                raise RuntimeError(line + cl.stdout.read())
            if done.get("phase") == "done":
                break
            if os.environ.get("BENCH_DEBUG"):
                print(done)
        cl.wait(60)
        await holder.close()
        return {"n": n, "enqueue_s": first["seconds"], "rate": n / first["seconds"],
                "cpu_ms_per_enqueue": 1000 * cpu_enqueue / n,
                "rss_per_waiter_kb": (rss1 - rss0) / n / 1024, "rss0_mb": rss0 / 2**20, "rss1_mb": rss1 / 2**20,
                "max_gap": done["max_gap"], "p99_gap": done["p99_gap"],
                "contiguous": done["contiguous"] and rest_ok}
    finally:
        g.stop()
        fw.terminate()
        fw.wait()


# -------------------------------------------------------------- 3. dispatch latency
async def dispatch_latency(tmp: Path, rounds: int) -> dict:
    port = free_port()
    fw = subprocess.Popen([sys.executable, "-m", "tests.support.fake_worker", "--port", str(port)], cwd=REPO,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    g = start_gateway(tmp, [f"http://127.0.0.1:{port}"], 1)
    try:
        from_stopped, from_close = await dispatch_rounds(g.ws, rounds)
    finally:
        g.stop()
        fw.terminate()
        fw.wait()
    return {"rounds": rounds, "p50": pct(from_stopped, 50), "p99": pct(from_stopped, 99),
            "stop_p50": pct(from_close, 50), "stop_p99": pct(from_close, 99)}


# ------------------------------------------------------------------------- main
async def amain(args: argparse.Namespace) -> None:
    raise_nofile()
    tmp = Path(tempfile.mkdtemp(prefix="omniserve_bench_gw_"))
    cpu = os.cpu_count()
    print(f"gateway bench — loopback, {cpu} CPU(s), load avg {os.getloadavg()[0]:.1f}; fake worker (zero compute)\n")

    for sub in ("r", "q", "d"):
        (tmp / sub).mkdir(parents=True, exist_ok=True)
    rows = await relay_overhead(tmp / "r", args.quick) if not args.skip_relay else []
    if rows:
        print("1. relay overhead: 85 KB audio_chunk round trip (ms)   [targets: +1 ms p50, +5 ms p99]")
        print(f"{'load':32} {'n':>6} {'direct p50':>10} {'gw p50':>8} {'+p50':>7} {'direct p99':>10} {'gw p99':>8} {'+p99':>7}")
        for r in rows:
            print(f"{r[0]:32} {r[1]:6d} {r[2]:10.2f} {r[3]:8.2f} {r[4]:+7.2f} {r[5]:10.2f} {r[6]:8.2f} {r[7]:+7.2f}")
        print()

    (tmp / "q").mkdir(parents=True, exist_ok=True)
    q = await queue_scale(tmp / "q", args.waiters, args.hold)
    print(f"2. queue scale: {q['n']} waiting WebSocket clients behind one busy worker (--http)")
    print(f"{'enqueue rate':34} {q['rate']:10.0f} /s   (target >= 1000/s; {q['enqueue_s']:.1f} s for all)")
    print(f"{'gateway CPU per enqueue':34} {q['cpu_ms_per_enqueue']:10.2f} ms   (= {1000 / q['cpu_ms_per_enqueue']:.0f}/s "
          f"on one dedicated core; includes the handshake and the updates sent meanwhile)")
    print(f"{'gateway RSS per waiter':34} {q['rss_per_waiter_kb']:10.1f} KB   (target <= 40 KB; "
          f"{q['rss0_mb']:.0f} -> {q['rss1_mb']:.0f} MB)")
    print(f"{'max gap between queue updates':34} {q['max_gap']:10.2f} s    (target <= 3 s; p99 {q['p99_gap']:.2f} s)")
    print(f"{'positions contiguous 1..N':34} {str(q['contiguous']):>10}")
    print()

    (tmp / "d").mkdir(parents=True, exist_ok=True)
    d = await dispatch_latency(tmp / "d", args.rounds)
    print(f"3. dispatch latency ({d['rounds']} rounds, ms)   [target <= 5 ms]")
    print(f"{'session end (stopped) -> next queue_done':44} p50 {d['p50']:6.2f}   p99 {d['p99']:6.2f}")
    print(f"{'client stop sent -> next queue_done':44} p50 {d['stop_p50']:6.2f}   p99 {d['stop_p99']:6.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--waiters", type=int, default=10000)
    p.add_argument("--hold", type=float, default=8.0, help="seconds to watch queue updates")
    p.add_argument("--rounds", type=int, default=50)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--skip-relay", action="store_true")
    asyncio.run(amain(p.parse_args()))


if __name__ == "__main__":
    main()
