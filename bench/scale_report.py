"""The table of ``bench/scale.py``: one column per setup, targets beside the figures, ratios against
A from the same run, which resource saturated while the waiters came in, and a bottleneck line.

A cell whose figures are missing (its phase failed; the error is listed under the table) reads ``n/a``.
"""
from __future__ import annotations

import argparse
from typing import Callable, Optional

TARGET_SPEEDUP = 1.6       # B's enqueue rate against A's
SATURATED_PCT = 85.0       # a single-threaded process this busy (of one core) is the limit
BUSY_SHARE = 0.9           # the machine this busy (of all its cores) is saturated
W = 28                     # column width
TITLES = {"A": "A: 1 process, in-process", "B": "B: 2 processes, Redis", "C": "C: 4 processes, Redis"}


def fmt(x: Optional[float], spec: str = ".1f", none: str = "—") -> str:
    return none if x is None or x != x else format(x, spec)


def rates(q: dict, k: int) -> dict:
    """Enqueues per CPU second of the server side, and what that projects on dedicated cores: the
    gateways' work split over k processes, each on its own core, Redis (single-threaded) on one more."""
    g = q["cpu"]["groups"]
    gw, rd, n = g["gateways"]["cpu_s"], g["redis"]["cpu_s"], q["n"] - q["failed"]
    return {"gw_ms": 1000 * gw / n, "redis_ms": 1000 * rd / n, "cpu_rate": n / (gw + rd),
            "projected": min(k * n / gw, n / rd if rd else float("inf")), "redis_cap": n / rd if rd else None}


def saturation(cpu: dict, ncpu: int) -> str:
    g = cpu["groups"]
    ours = sum(v["pct"] for v in g.values())
    parts = [f"machine {cpu['machine_pct']:.0f}% of {100 * ncpu}%"]
    full = cpu["machine_pct"] >= BUSY_SHARE * 100 * ncpu
    if full:
        parts.append("the cores are saturated")
    hot = [f"{name} (one process at {v['max_pct']:.0f}% of a core)" for name, v in g.items()
           if v["max_pct"] >= SATURATED_PCT]
    if hot:
        parts.append("one process saturated: " + ", ".join(hot))
    if not hot and not full:
        parts.append("nothing CPU-bound: waiting on sockets")
    parts.append(f"gateways {g['gateways']['pct']:.0f}%, redis {g['redis']['pct']:.0f}%, "
                 f"clients {g['clients']['pct']:.0f}%, workers {g['workers']['pct']:.0f}%, "
                 f"others {max(0.0, cpu['machine_pct'] - ours):.0f}%")
    return "; ".join(parts)


def _relay(x: dict, q: str) -> str:
    d, g = x[f"d{q}"], x[f"g{q}"]
    extra = f" [{x['sessions']} sess]" if x["sessions"] != 40 else ""
    return f"{d:.1f} → {g:.1f} ({g - d:+.1f}){extra}"


def _immediate(st: dict) -> str:
    """Sessions asked for with a slot free that were told ``queued`` before ``queue_done``."""
    n = st.get("queued_first", 0)
    return f"{n}/{st['asked']}" + (f" (≤ {st['queued_ms']:.0f} ms)" if n else "")


def _kill_contig(k: dict) -> str:
    if k["contiguous_stable"] is None:
        return f"NOT within {k['window_s']:.0f}"
    return f"{k['contiguous_stable']:.2f} (first {fmt(k['contiguous_first'], '.2f')})"


def _served(k: dict) -> str:
    order = "in order" if k["served_in_order"] else "OUT OF ORDER"
    return f"{k['sessions_lost']} → {k['served']} {order} ({fmt(k['served_within'])} s)"


def report(results: list[dict], args: argparse.Namespace, ncpu: int, lease_s: float) -> None:
    by = {r["name"]: r for r in results}
    a = by.get("A")

    def cell(f: Callable[[dict], str], r: dict) -> str:
        try:
            return f(r)
        except (KeyError, TypeError, ZeroDivisionError, IndexError):
            return "n/a"

    def row(label: str, f: Callable[[dict], str], target: str = "") -> None:
        print(f"{label:42}" + "".join(f"{cell(f, r):>{W}}" for r in results) + f"   {target}")

    def vs_a(x: float, key: Callable[[dict], float]) -> str:
        try:
            return f" ({x / key(a):.2f}×A)" if a else ""
        except (KeyError, TypeError, ZeroDivisionError):
            return ""

    def kill(r: dict) -> dict:
        return r["queue"]["kill"]

    def rr(r: dict) -> dict:
        return rates(r["queue"], r["k"])

    print()
    print(f"{'':42}" + "".join(f"{TITLES.get(r['name'], r['name']):>{W}}" for r in results) + "   target")
    row("gateway start (all ready), s", lambda r: fmt(r["start_s"]))
    print("1. enqueue: waiters behind every slot held")
    row("   waiters (failed)", lambda r: f"{r['queue']['n']} ({r['queue']['failed']})", "0 failed")
    row("   wall rate /s", lambda r: f"{r['queue']['rate']:.0f}" + vs_a(r["queue"]["rate"], lambda x: x["queue"]["rate"]),
        f"B ≥ {TARGET_SPEEDUP}×A")
    row("   server CPU ms / enqueue (gw + redis)", lambda r: f"{rr(r)['gw_ms']:.2f} + {rr(r)['redis_ms']:.2f}")
    row("   CPU-time rate /s (1 / that)", lambda r: f"{rr(r)['cpu_rate']:.0f}" +
        vs_a(rr(r)["cpu_rate"], lambda x: rr(x)["cpu_rate"]))
    row("   on dedicated cores /s (projected)", lambda r: f"{rr(r)['projected']:.0f}" +
        vs_a(rr(r)["projected"], lambda x: rr(x)["projected"]), f"B ≥ {TARGET_SPEEDUP}×A")
    row("   CPU % gateways: sum (busiest)", lambda r: "{pct:.0f} ({max_pct:.0f})".format(
        **r["queue"]["cpu"]["groups"]["gateways"]))
    row("   CPU % redis-server", lambda r: f"{r['queue']['cpu']['groups']['redis']['pct']:.0f}" if r["redis"] else "—")
    row("   CPU % client generator (2 procs)", lambda r: f"{r['queue']['cpu']['groups']['clients']['pct']:.0f}")
    row(f"   CPU % machine (of {100 * ncpu})", lambda r: f"{r['queue']['cpu']['machine_pct']:.0f}")
    print("2. relay: 40 sessions × 20 chunks/s, 85 KB round trip, ms (direct → via gateway (+))")
    row("   p50", lambda r: _relay(r["relay"], "50"), "+1 ms")
    row("   p99", lambda r: _relay(r["relay"], "99"), "≤ +5 ms")
    row("   machine CPU % meanwhile (bench proc)", lambda r: f"{r['relay']['machine_pct']:.0f} "
        f"({r['relay']['bench_pct']:.0f})")
    row("   p50 after the kill", lambda r: _relay(r["relay_after"], "50") if r["redis"] else "—")
    row("   p99 after the kill", lambda r: _relay(r["relay_after"], "99") if r["redis"] else "—", "≤ +5 ms")
    print("3. dispatch: session end (stopped) → next queue_done, ms")
    row("   p50 / p99", lambda r: f"{r['dispatch']['p50']:.2f} / {r['dispatch']['p99']:.2f}", "p50 ≤ 5 ms")
    row("   p50 / p99 after the kill", lambda r: f"{r['dispatch_after']['p50']:.2f} / {r['dispatch_after']['p99']:.2f}"
        if r["redis"] else "—", "p50 ≤ 5 ms")
    row("   slot free, yet told 'queued' first", lambda r: _immediate(r["dispatch"]["immediate"]), "0 (protocol)")
    print("4. memory per waiter")
    row("   gateways' RSS growth, KB", lambda r: f"{r['queue']['rss_kb']:.1f} ({r['queue']['rss0_mb']:.0f}→"
        f"{r['queue']['rss1_mb']:.0f} MB)", "≤ 40 KB")
    row("   redis used_memory growth, KB", lambda r: fmt(r["queue"]["redis_kb"], ".2f"))
    print(f"5. queue updates while waiting ({args.hold:.0f} s)")
    row("   positions contiguous 1..N", lambda r: ("yes" if r["queue"]["hold"]["contiguous"] else "NO") +
        f" ({r['queue']['hold']['waiting']} waiting)", "yes")
    row("   max / p99 update gap, s", lambda r: f"{r['queue']['hold']['max_gap']:.2f} / "
        f"{r['queue']['hold']['p99_gap']:.2f}", "≤ 3 s")
    row("   client loop's longest stall, s", lambda r: f"{r['queue']['hold']['client_lag']:.2f}")
    row("   queue length (Redis / the gateway)", lambda r: str(r["queue"]["queue_length"]))
    print(f"6. SIGKILL of one gateway process while they wait (lease {lease_s:g} s; watched {args.window:.0f} s)")
    row("   its waiters closed / had, within s", lambda r: f"{kill(r)['victims_closed']}/{kill(r)['victims']} in "
        f"{kill(r)['victims_closed_within']:.2f}" if r["redis"] else "—", "all")
    row("   how (close code)", lambda r: ", ".join(f"{w} ×{c}" for w, c in kill(r)["victim_close_why"])[:W - 1]
        if r["redis"] else "—")
    row("   others contiguous again after, s", lambda r: _kill_contig(kill(r)) if r["redis"] else "—",
        f"≤ lease + 3 = {lease_s + 3:g}")
    row("   others dropped", lambda r: f"{kill(r)['others_closed']} of {kill(r)['others']}" if r["redis"] else "—", "0")
    row("   its sessions' slots → next served", lambda r: _served(kill(r)) if r["redis"] else "—", "equal, in order")
    row("   others' max update gap, s", lambda r: fmt(kill(r)["max_gap"], ".2f") if r["redis"] else "—", "≤ 3 s")
    row("   still waiting: clients / Redis", lambda r: f"{kill(r)['waiting_end']} / {kill(r)['queue_length']}"
        if r["redis"] else "—", "equal")
    row("   its state left in Redis", lambda r: (", ".join(kill(r)["victim_left_in_redis"]) or "none")[:W - 1]
        if r["redis"] else "—", "none")
    row("   restart: process / lease / answers, s", lambda r: f"{fmt(kill(r)['respawn_s'], '.1f', 'never')} / "
        f"{fmt(kill(r)['registered_s'], '.1f', 'never')} / {fmt(kill(r)['answers_s'], '.1f', 'never')}"
        if r["redis"] else "—")
    row("   restarted: its share of new connections", lambda r: _share(kill(r)) if r["redis"] else "—",
        "≈ 1/N, any")
    row("   queue drained after clients left, s", lambda r: f"{r['queue']['drain_s']:.1f}")
    row("   slots lost after the drain", lambda r: str(len(r["queue"]["lost_slots"])), "0")
    print()
    for r in results:
        q = r.get("queue", {})
        if "cpu" in q:
            print(f"{r['name']} enqueue phase ({q['enqueue_s']:.1f} s): {saturation(q['cpu'], ncpu)}")
        if q.get("failed"):
            print(f"  {q['failed']} waiters failed to enqueue: {q['failed_why']}")
        if q.get("holders_ended"):
            print(f"  held sessions that ended while they should hold: {q['holders_ended']}")
        if q.get("hold", {}).get("odd"):
            print(f"  not waiting at the end of the hold: {q['hold']['odd']}")
        k = q.get("kill") or {}
        if k.get("others_close_why"):
            print(f"  others closed after the kill: {k['others_close_why']}")
        for lost in q.get("lost_slots", [])[:3]:
            print(f"  slot lost: {lost}")
        for line in r.get("notes", []) + [f"ERROR {e}" for e in r.get("errors", [])]:
            print(f"  {line}")
        for line in r.get("log", []):
            print(f"  log: {line}")
    print()
    print(bottleneck(results, ncpu))


def bottleneck(results: list[dict], ncpu: int) -> str:
    """What limited the enqueue rate in each setup, and how B → C grew."""
    parts = []
    for r in results:
        q = r.get("queue", {})
        if "cpu" not in q:
            continue
        g, m = q["cpu"]["groups"], q["cpu"]["machine_pct"]
        names = ("gateways", "redis", "clients")
        top = max(names, key=lambda n: g[n]["pct"])
        hot = max(names, key=lambda n: g[n]["max_pct"])
        if m >= BUSY_SHARE * 100 * ncpu:
            why = f"the {ncpu} cores ({m:.0f}%; the most to {top}, {g[top]['pct']:.0f}%)"
        elif g[hot]["max_pct"] >= SATURATED_PCT:
            why = f"one {hot} process at {g[hot]['max_pct']:.0f}% of a core"
        else:
            why = f"not CPU ({m:.0f}% of {100 * ncpu}%): sockets"
        parts.append(f"{r['name']}: {why}")
    out = "bottleneck — " + "; ".join(parts)
    by = {r["name"]: r for r in results}
    try:
        b, c = by["B"], by["C"]
        rb, rc = rates(b["queue"], 2), rates(c["queue"], 4)
        out += (f".\n2 → 4 processes: wall rate ×{c['queue']['rate'] / b['queue']['rate']:.2f}, gateway CPU per "
                f"enqueue ×{rc['gw_ms'] / rb['gw_ms']:.2f}, Redis CPU per enqueue ×{rc['redis_ms'] / rb['redis_ms']:.2f} "
                f"(Redis alone would cap at {fmt(rc['redis_cap'], '.0f')}/s), RSS per waiter "
                f"{b['queue']['rss_kb']:.1f} → {c['queue']['rss_kb']:.1f} KB, relay p99 overhead "
                f"{b['relay']['g99'] - b['relay']['d99']:+.1f} → {c['relay']['g99'] - c['relay']['d99']:+.1f} ms, "
                f"dispatch p50 {b['dispatch']['p50']:.2f} → {c['dispatch']['p50']:.2f} ms")
    except (KeyError, TypeError, ZeroDivisionError):
        pass
    return out


def _share(k: dict) -> str:
    """The restarted member's share of fresh connections: from 127.0.0.2, then from 127.0.0.1, the
    waiters' own address (``scale_procs.PROBE_SOURCES``: why they differ)."""
    share = k.get("new_share") or {}
    return " / ".join(f"{v:.0%}" if v is not None else "—" for v in share.values())

