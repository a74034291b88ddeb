"""Figures from the waiters' recorded histories (``bench/waiters.py`` dumps): update gaps and
contiguous positions over a hold, and what a gateway's death did to the queue.

A history is ``ev = [[t, pos], …]``: pos > 0 a position, 0 ``queue_done``, -1 closed, -2 anything
else (see ``waiters.py``). Times are ``time.monotonic`` of the machine.
"""
from __future__ import annotations

from collections import Counter
from typing import Optional

import numpy as np

SERVED, CLOSED, OTHER = 0, -1, -2
CHECK_EVERY_S = 0.05


def merged(dumps: list[dict]) -> list[dict]:
    return [w for d in dumps for w in d["waiters"]]


def lags(dumps: list[dict], t0: float, t1: float) -> float:
    """The client processes' longest event-loop stall between t0 and t1 (s)."""
    return max((late for d in dumps for t, late in d["lag"] if t0 <= t <= t1), default=0.0)


def state_at(ev: list, t: float) -> Optional[int]:
    """The last recorded state at time t (None: nothing yet)."""
    last = None
    for te, pos in ev:
        if te > t:
            break
        last = pos
    return last


def max_gap(ev: list, t0: float, t1: float) -> float:
    """Longest time without a message between t0 and t1, counting from the last one before t0."""
    before = [te for te, pos in ev if te < t0 and pos >= 0]
    ts = before[-1:] + [te for te, pos in ev if t0 <= te <= t1 and pos >= 0] + [t1]
    return max((b - a for a, b in zip(ts, ts[1:])), default=0.0)


def contiguous(positions: np.ndarray) -> bool:
    return bool(np.array_equal(np.sort(positions), np.arange(1, len(positions) + 1)))


def hold_figures(waiters: list[dict], t_hold: float, t_end: float) -> dict:
    """Over [t_hold, t_end] with nobody served: each waiter's longest update gap, and whether the
    last positions are exactly 1..N."""
    queued = [w for w in waiters if w["ev"] and w["ev"][0][1] > 0]       # the others failed to enqueue
    last = [state_at(w["ev"], t_end) for w in queued]
    waiting = [p for p in last if p is not None and p > 0]
    gaps = sorted(max_gap(w["ev"], t_hold, t_end) for w, p in zip(queued, last) if p is not None and p > 0)
    odd = Counter("served" if p == SERVED else w["why"] for w, p in zip(queued, last) if p is None or p <= 0)
    return {"n": len(queued), "waiting": len(waiting), "served": sum(1 for p in last if p == SERVED),
            "closed": sum(1 for p in last if p == CLOSED), "odd": odd.most_common(3),
            "contiguous": len(waiting) == len(queued) and contiguous(np.asarray(waiting)),
            "max_gap": gaps[-1] if gaps else float("nan"),
            "p99_gap": gaps[int(0.99 * (len(gaps) - 1))] if gaps else float("nan")}


def kill_figures(waiters: list[dict], victim_ports: set[int], t_kill: float, t_end: float) -> dict:
    """A gateway process died at t_kill, holding the clients whose ports are ``victim_ports``: how
    its waiters ended, how long until the others' positions were 1..M again (and stayed so), who
    was served meanwhile and in which order, the others' longest update gap."""
    victims = [w for w in waiters if w["port"] in victim_ports and (state_at(w["ev"], t_kill) or 0) > 0]
    others = [w for w in waiters if w["port"] not in victim_ports and (state_at(w["ev"], t_kill) or 0) > 0]
    # the victim's waiters: closed, when, how
    ends = [next(((te - t_kill, w["why"]) for te, pos in w["ev"] if te >= t_kill and pos == CLOSED), None)
            for w in victims]
    closed = [e for e in ends if e is not None]
    # the others: a sweep over their events after the kill
    pos_at_kill = np.array([state_at(w["ev"], t_kill) for w in others], dtype=np.int64)
    events = sorted((te, k, pos) for k, w in enumerate(others) for te, pos in w["ev"] if t_kill < te <= t_end)
    cur = pos_at_kill.copy()
    i, t = 0, t_kill
    first_ok: Optional[float] = None
    last_bad: Optional[float] = None
    while t <= t_end + CHECK_EVERY_S:
        while i < len(events) and events[i][0] <= t:
            cur[events[i][1]] = events[i][2]
            i += 1
        ok = contiguous(cur[cur > 0])
        if ok and first_ok is None:
            first_ok = t - t_kill
        if not ok:
            last_bad = t - t_kill
        t += CHECK_EVERY_S
    stable = None if last_bad is not None and last_bad >= t_end - t_kill - CHECK_EVERY_S else \
        (0.0 if last_bad is None else last_bad + CHECK_EVERY_S)
    served = [k for k in range(len(others)) if cur[k] == SERVED]
    served_t = [next(te for te, pos in others[k]["ev"] if te > t_kill and pos == SERVED) - t_kill for k in served]
    in_order = sorted(served) == sorted(np.argsort(pos_at_kill, kind="stable")[:len(served)].tolist())
    gone = [w["why"] for k, w in enumerate(others) if cur[k] == CLOSED]
    waiting = [k for k in range(len(others)) if cur[k] > 0]
    return {"victims": len(victims), "victims_closed": len(closed),
            "victims_closed_within": max((d for d, _ in closed), default=float("nan")),
            "victim_close_why": Counter(_close_kind(why) for _, why in closed).most_common(3),
            "others": len(others), "others_closed": len(gone), "others_close_why": Counter(gone).most_common(3),
            "contiguous_first": first_ok, "contiguous_stable": stable,
            "served": len(served), "served_in_order": in_order,
            "served_within": max(served_t, default=float("nan")),
            "waiting_end": len(waiting),
            "max_gap": max((max_gap(others[k]["ev"], t_kill, t_end) for k in waiting), default=float("nan"))}


def _close_kind(why: Optional[str]) -> str:
    """"closed 1006 (ConnectionClosedError)" -> "1006 ConnectionClosedError"."""
    text = (why or "?").replace("closed ", "").replace("(", "").replace(")", "")
    return text[:40]
