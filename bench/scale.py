"""Scale-out bench: one gateway with in-process state (A) vs ``omniserve gateway --processes 2`` (B)
and ``--processes 4`` (C) sharing one FIFO on a real ``redis-server``; loopback, zero-compute
workers, a few minutes on 2 cores (``--quick``: under two).

    .venv/bin/python bench/scale.py [--waiters 20000] [--quick]

For each setup, on 40 echo fake workers (one slot each, two processes):
1. relay p50/p99 of an 85 KB duplex ``audio_chunk`` round trip at 40 sessions × 20 chunks/s, via the
   gateway(s) vs straight to the workers;
2. dispatch latency, session end (``stopped``) → the next client's ``queue_done``, one slot free;
3. N waiting clients (two client processes, ``bench/waiters.py``) behind 40 held sessions: enqueue
   rate (wall) and the CPU it cost (gateways, redis-server, clients, the machine: psutil), which
   resource saturated, gateway RSS and Redis ``used_memory`` per waiter, the longest gap between
   two queue updates of one waiter, positions exactly 1..N;
4. (B, C) SIGKILL of one gateway process while they wait: its waiters' closes, the time until the
   others' positions are 1..M again, the waiters served by the slots its sessions held, its state
   in Redis after the lease, the restart by the group's parent and the restarted member's share of
   40 fresh connections from 127.0.0.2 and from 127.0.0.1 (the waiters' address: ``scale_procs.
   PROBE_SOURCES`` says why the two differ), then relay and dispatch again.
Ratios are against A in the same run. Every process started here is ended at the end, also on error.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Optional

import psutil
import websockets

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.gateway_load import (audio_chunk, dispatch_rounds, pct, raise_nofile, relay_round,  # noqa: E402
                                until_assigned)
from bench.cpu_meter import CpuMeter  # noqa: E402
from bench.scale_procs import PROBE_SOURCES, Reaper, Setup, Workers, kill_member  # noqa: E402
from bench.scale_report import report  # noqa: E402
from bench.waiter_history import hold_figures, kill_figures, lags, merged  # noqa: E402
from bench.waiters import Clients  # noqa: E402
from omniserve.config import Settings  # noqa: E402

RELAY_SESSIONS = 40        # = the workers: every session gets one at once
RELAY_PER_S = 20
CLIENT_PROCS = 2
FD_MARGIN = 400            # one gateway's sockets besides its waiters (workers, Redis, logs, holders)
SETUPS = (("A", 1, False), ("B", 2, True), ("C", 4, True))


# ------------------------------------------------------------------------ phases
async def hold_sessions(ws_url: str, n: int, tag: str, stats: Optional[dict] = None) -> list:
    """``n`` prepared duplex sessions through the gateway, each holding one worker slot (free when
    asked for); ``stats`` counts those told ``queued`` before ``queue_done`` and the longest such wait."""
    async def one(i: int):
        ws = await websockets.connect(f"{ws_url}/ws/duplex/omni_{tag}{i}", ping_interval=None, max_size=None,
                                      open_timeout=30)
        t0 = time.perf_counter()
        seen = await until_assigned(ws)
        if stats is not None and len(seen) > 1:
            stats["queued_first"] = stats.get("queued_first", 0) + 1
            stats["queued_ms"] = max(stats.get("queued_ms", 0.0), 1000 * (time.perf_counter() - t0))
        await ws.send('{"type":"prepare"}')
        await asyncio.wait_for(ws.recv(), 30)
        return ws
    got = await asyncio.gather(*(one(i) for i in range(n)), return_exceptions=True)
    conns = [c for c in got if not isinstance(c, BaseException)]
    errors = [c for c in got if isinstance(c, BaseException)]
    if errors:                # none left open behind a failure
        await close_all(conns)
        raise RuntimeError(f"{len(errors)} of {n} sessions to hold failed; first: {errors[0]!r}")
    return conns


async def close_all(conns: list) -> None:
    await asyncio.gather(*(ws.close() for ws in conns), return_exceptions=True)


async def usable_slots(s: Setup, w: Workers, r: dict, phase: str) -> int:
    """The slots the gateways count free once every worker says idle (all, unless one is lost:
    then noted in ``r``)."""
    try:
        await asyncio.to_thread(w.wait_idle, 30)
    except TimeoutError as e:
        r.setdefault("notes", []).append(f"{phase}: {e}")
    free = await asyncio.to_thread(s.wait_free, len(w.ports), 15)
    if free < len(w.ports):
        r.setdefault("notes", []).append(f"{phase}: only {free} of {len(w.ports)} slots free 15 s after every "
                                         f"session ended; Redis: {s.slots_not_free()[:3]}")
    return min(free, len(w.ports))


async def relay(s: Setup, w: Workers, n: int, tag: str, r: dict, pairs: int) -> dict:
    """Direct and via-gateway rounds taken in turn (``pairs`` of each, ``n`` chunks per session in
    all), so a drift in the machine's other load touches both alike."""
    frame = audio_chunk()
    sessions = await usable_slots(s, w, r, tag + " relay")
    got: dict[str, list[float]] = {"direct": [], "gateway": []}
    meter = CpuMeter({"gateways": s.tree(), "workers": [psutil.Process(p.pid) for p in w.procs],
                      "bench": [psutil.Process()]})
    meter.start()
    for i in range(pairs):
        for mode in ("direct", "gateway"):
            if mode == "gateway":   # the direct sessions made the workers busy behind the gateways' backs
                await asyncio.to_thread(s.wait_free, sessions, 15)
            res = await relay_round(s.ws, w.ports, sessions, RELAY_PER_S, max(1, n // pairs), frame, f"{tag}{i}",
                                    (mode,))
            got[mode] += res[mode]
            await asyncio.to_thread(w.wait_idle, 30)
    cpu = meter.stop()
    d, g = got["direct"], got["gateway"]
    return {"n": len(g), "sessions": sessions, "d50": pct(d, 50), "g50": pct(g, 50), "d99": pct(d, 99),
            "g99": pct(g, 99), "machine_pct": cpu["machine_pct"], "bench_pct": cpu["groups"]["bench"]["pct"]}


async def dispatch(s: Setup, w: Workers, rounds: int, tag: str, r: dict) -> dict:
    free = await usable_slots(s, w, r, tag + " dispatch")
    stats: dict = {"asked": free - 1}
    holders = await hold_sessions(s.ws, free - 1, tag + "h", stats)     # one slot left free
    try:
        from_stopped, from_stop = await dispatch_rounds(s.ws, rounds, tag)
    finally:
        await close_all(holders)
    await asyncio.to_thread(w.wait_idle, 30)
    return {"rounds": rounds, "p50": pct(from_stopped, 50), "p99": pct(from_stopped, 99),
            "stop_p50": pct(from_stop, 50), "immediate": stats}


async def queue_and_kill(s: Setup, w: Workers, tmp: Path, reaper: Reaper, n: int, hold_s: float,
                         kill: bool, window_s: float, r: dict, handshakes: int, verbose: bool) -> dict:
    free = await usable_slots(s, w, r, "queue")
    holders = await hold_sessions(s.ws, free, "qh")              # every slot busy: all wait
    holder_ports = [ws.local_address[1] for ws in holders]
    clients: Optional[Clients] = None
    out: dict = {"n": n}
    r["queue"] = out
    try:
        await asyncio.sleep(1.0)
        rss0, redis0 = s.rss(), s.redis_memory()
        clients = Clients(tmp, reaper, s.ws, n, CLIENT_PROCS, handshakes)
        await clients.ready()
        meter = CpuMeter({"gateways": s.tree(), "redis": [psutil.Process(s.redis.proc.pid)] if s.redis and
                          s.redis.proc else [], "clients": [psutil.Process(p.pid) for p in clients.procs],
                          "workers": [psutil.Process(p.pid) for p in w.procs], "bench": [psutil.Process()]})
        meter.start()
        enq = await clients.ask("go", 600)
        cpu = meter.stop()
        failed = {k: v for e in enq for k, v in e["failed"].items()}
        wall = max(e["t1"] for e in enq) - min(e["t0"] for e in enq)
        out.update(enqueue_s=wall, rate=(n - len(failed)) / wall, failed=len(failed),
                   failed_why=sorted(set(failed.values()))[:3], cpu=cpu, members=len(s.members()))
        await asyncio.sleep(2.5)              # a periodic broadcast passes before memory is read
        rss1, redis1 = s.rss(), s.redis_memory()
        ok = max(1, n - len(failed))          # per waiter that got a place
        out.update(rss_kb=(rss1 - rss0) / ok / 1024, rss0_mb=rss0 / 2**20, rss1_mb=rss1 / 2**20,
                   redis_kb=(redis1 - redis0) / ok / 1024 if s.redis else None)
        t_hold = time.monotonic()
        await asyncio.sleep(hold_s)
        t_end = time.monotonic()
        dumps = await clients.dump("hold")
        out["hold"] = hold_figures(merged(dumps), t_hold, t_end)
        out["hold"]["client_lag"] = lags(dumps, t_hold, t_end)
        out["queue_length"] = s.queue_length()
        out["holders_ended"] = Counter(f"{ws.close_code} {ws.close_reason}".strip() for ws in holders
                                       if ws.close_code is not None).most_common(3)
        if kill:
            out["kill"] = await kill_one(s, clients, holder_ports, window_s, verbose)
    finally:
        if clients is not None:
            clients.stop()
        await close_all(holders)
    t0 = time.monotonic()
    while s.queue_length():
        if time.monotonic() - t0 > 120:
            raise TimeoutError(f"the queue still holds {s.queue_length()} tickets 120 s after the clients left")
        await asyncio.sleep(0.2)
    await asyncio.to_thread(w.wait_idle, 60)
    out["drain_s"] = time.monotonic() - t0
    # every client is gone and every worker idle: a slot Redis still counts taken is lost
    lost = s.slots_not_free()
    while lost and time.monotonic() - t0 < out["drain_s"] + Settings().gateway.lease_s + 5:
        await asyncio.sleep(0.5)
        lost = s.slots_not_free()
    out["lost_slots"] = lost
    return out


def watch_restart(s: Setup, before: set[str], victim_pid: int, t_kill: float, timeout: float,
                  probes: int = 40) -> dict:
    """Until the group's parent runs a new member, that member holds a lease in Redis, and it
    answers ``/health`` (fresh connections from ``PROBE_SOURCES[0]``: the kernel picks the member);
    then the new member's share of ``probes`` fresh connections from each of ``PROBE_SOURCES``."""
    respawn = registered = answer = None
    new_ids: set[str] = set()
    while time.monotonic() < t_kill + timeout and answer is None:
        now = time.monotonic() - t_kill
        if respawn is None and len(ms := s.members()) == s.k and all(m.pid != victim_pid for m in ms):
            respawn = now
        if registered is None and (new_ids := s.gateways_in_redis() - before):
            registered = now
        if new_ids and s.health_id(1.0, PROBE_SOURCES[0]) in new_ids:
            answer = time.monotonic() - t_kill
        time.sleep(0.02)
    share = {src: sum(s.health_id(1.0, src) in new_ids for _ in range(probes)) / probes if new_ids else None
             for src in PROBE_SOURCES}
    return {"respawn_s": respawn, "registered_s": registered, "answers_s": answer, "new_share": share}


async def kill_one(s: Setup, clients: Clients, holder_ports: list[int], window_s: float, verbose: bool) -> dict:
    assert s.g is not None
    members = sorted(s.members(), key=lambda p: p.pid)
    victim = members[1]
    before = s.gateways_in_redis()
    victim_ports = {c.raddr.port for c in victim.net_connections(kind="tcp")
                    if c.laddr and c.laddr.port == s.g.port and c.raddr}
    sessions_lost = sum(1 for p in holder_ports if p in victim_ports)
    t_kill = kill_member(victim)
    if verbose:
        print(f"  killed gateway process {victim.pid} at {time.strftime('%H:%M:%S')}", flush=True)
    restart = asyncio.create_task(asyncio.to_thread(watch_restart, s, before, victim.pid, t_kill, window_s + 30))
    await asyncio.sleep(window_s)
    t_end = time.monotonic()
    dumps = await clients.dump("kill")
    fig = kill_figures(merged(dumps), victim_ports, t_kill, t_end)
    fig["queue_length"] = s.queue_length()
    lapsed = before - s.gateways_in_redis()        # the victim's lease ran out: its id
    fig["victim_left_in_redis"] = (s.victim_state(next(iter(lapsed))) if len(lapsed) == 1 else
                                   [f"{len(lapsed)} leases lapsed"])
    fig.update(await restart, sessions_lost=sessions_lost, window_s=window_s)
    fig["restart_logged"] = "killed by SIGKILL" in s.g.tail(20000)
    return fig


async def run_setup(name: str, k: int, redis: bool, args: argparse.Namespace, tmp: Path, reaper: Reaper,
                    w: Workers, n: int) -> dict:
    env = {"OMNISERVE_GATEWAY__MAX_QUEUE_SIZE": str(n + 500), "OMNISERVE_GATEWAY__HEALTH_INTERVAL_S": "2",
           # every client comes from 127.0.0.1: lift the per-address caps for this load
           "OMNISERVE_GATEWAY__EDGE__MAX_WS_PER_IP": str(n + 500),
           "OMNISERVE_GATEWAY__EDGE__MAX_QUEUED_PER_IP": str(n + 500)}
    sub = tmp / name
    sub.mkdir()
    t0 = time.monotonic()
    s = Setup(sub, reaper, w.urls, k, redis, env, ("--log-level", args.log_level))
    r: dict = {"name": name, "k": k, "redis": redis, "start_s": time.monotonic() - t0}
    phases = [("relay", lambda: relay(s, w, args.chunks, name.lower(), r, args.pairs)),
              ("dispatch", lambda: dispatch(s, w, args.rounds, name.lower(), r)),
              ("queue", lambda: queue_and_kill(s, w, sub, reaper, n, args.hold, redis, args.window, r,
                                               args.handshakes, args.verbose))]
    if redis:
        phases += [("relay_after", lambda: relay(s, w, args.chunks, name.lower() + "k", r, args.pairs)),
                   ("dispatch_after", lambda: dispatch(s, w, args.rounds, name.lower() + "k", r))]
    try:
        for phase, run in phases:
            if args.verbose:
                print(f"  {name} {phase} {time.strftime('%H:%M:%S')}.{int(time.time() * 1000) % 1000:03d}", flush=True)
            try:
                r[phase] = await run()
            except Exception as e:        # noted, shown, and the next phase still runs
                r.setdefault("errors", []).append(f"{phase}: {type(e).__name__}: {e}")
                print(f"\n{name} {phase} failed: {type(e).__name__}: {e}\n{s.redis_snapshot()}", file=sys.stderr,
                      flush=True)
        r["log"] = s.log_summary()
    finally:
        s.stop()
    r["elapsed_s"] = time.monotonic() - t0
    print(f"  {name} done in {r['elapsed_s']:.0f} s", flush=True)
    return r


# --------------------------------------------------------------------------- main
async def amain(args: argparse.Namespace) -> int:
    hard = raise_nofile()
    ncpu = os.cpu_count() or 1
    tmp = Path(tempfile.mkdtemp(prefix="omniserve_bench_scale_"))
    reaper = Reaper()
    n = args.waiters
    n_single = min(n, hard - FD_MARGIN)     # one process holds all of A's waiters' sockets
    print(f"scale bench — loopback, {ncpu} CPU(s), load avg {os.getloadavg()[0]:.1f}; {RELAY_SESSIONS} echo fake "
          f"workers (zero compute) in 2 processes; waiters from {CLIENT_PROCS} client processes; "
          f"gateway --processes N on one port (SO_REUSEPORT); logs in {tmp}", flush=True)
    if n_single < n:
        print(f"note: open files are capped at {hard} per process here (hard RLIMIT_NOFILE), so one gateway "
              f"process holds at most ~{n_single} waiters: A runs {n_single}, B and C run {n}", flush=True)
    w = Workers(tmp, reaper, RELAY_SESSIONS, 2)
    results: list[dict] = []
    try:
        for name, k, redis in SETUPS:
            if name not in args.only:
                continue
            results.append(await run_setup(name, k, redis, args, tmp, reaper, w, n_single if k == 1 else n))
    finally:
        w.stop()
        reaper.strays(str(tmp))
        left = reaper.reap()
        if left:
            print(f"had to kill {len(left)} leftover process(es): {left}", file=sys.stderr, flush=True)
        if results:               # what finished, even when a later setup was interrupted
            report(results, args, ncpu, Settings().gateway.lease_s)
    stray = [p.pid for p in reaper.alive() + reaper.strays(str(tmp))]
    print(f"\nprocesses left running: {stray or 'none'}")
    return 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--waiters", type=int, default=20000)
    p.add_argument("--hold", type=float, default=8.0, help="seconds to watch queue updates")
    p.add_argument("--rounds", type=int, default=50, help="dispatch rounds")
    p.add_argument("--chunks", type=int, default=100, help="relay chunks per session and mode (20 per second)")
    p.add_argument("--pairs", type=int, default=4, help="relay rounds per mode, direct and gateway in turn")
    p.add_argument("--window", type=float, default=None, help="seconds watched after the kill (default lease + 8; --quick: + 4)")
    p.add_argument("--only", default="ABC", help="setups to run, e.g. AB")
    p.add_argument("--quick", action="store_true", help="2,000 waiters, shorter rounds: a smoke run")
    p.add_argument("--handshakes", type=int, default=256, help="WebSocket handshakes in flight, all client "
                                                                   "processes together")
    p.add_argument("--verbose", action="store_true", help="print when each phase starts")
    p.add_argument("--log-level", default="warning", choices=["debug", "info", "warning"], help="the gateways'")
    args = p.parse_args()
    if args.quick:
        args.waiters = min(args.waiters, 2000)
        args.hold, args.rounds, args.chunks, args.pairs = 3.0, 10, 20, 1
    if args.window is None:
        args.window = Settings().gateway.lease_s + (4.0 if args.quick else 8.0)

    def on_signal(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt          # unwinds through every finally: nothing is left running

    signal.signal(signal.SIGTERM, on_signal)
    sys.exit(asyncio.run(amain(args)))


if __name__ == "__main__":
    main()
