"""In-process checks of the gateway's pure parts: ETA estimates and layout, the wait queue's
positions. (No sockets: the scheduling on real processes is in test_gateway_queue.py; recording
cleanup is in test_recordings_remote.py.)"""
from __future__ import annotations

import pytest

from omniserve.gateway.eta import OVERRUN_FLOOR_S, EtaEstimator
from omniserve.gateway.queue import QueueFull, Ticket, WaitQueue
from omniserve.protocol.rest import EtaConfigUpdate


def test_ema_replaces_the_estimate_after_min_samples(tmp_path):
    e = EtaEstimator(tmp_path / "eta.json")
    assert e.estimate("chat") == 15
    e.record("chat", 5.0)
    e.record("chat", 5.0)
    assert e.estimate("chat") == 15            # 2 samples: still the configured value
    e.record("chat", 10.0)
    assert e.estimate("chat") == pytest.approx(0.3 * 10 + 0.7 * 5)
    assert e.estimate("omni_duplex") == 90     # per type


def test_remaining_and_overrun_floor(tmp_path):
    e = EtaEstimator(None)
    assert e.remaining("omni_duplex", 30) == 60
    assert e.remaining("omni_duplex", 200) == OVERRUN_FLOOR_S


def test_layout_on_soonest_free_worker():
    e = EtaEstimator(None)
    # two workers: free in 10 s and 0 s; three chats (15 s each)
    etas, heap = e.lay_out([10.0, 0.0], ["chat", "chat", "chat"])
    assert etas == [0.0, 10.0, 15.0]
    assert sorted(heap) == [25.0, 30.0]


async def test_partial_update_persists(tmp_path):
    e = EtaEstimator(tmp_path / "eta.json")
    await e.update(EtaConfigUpdate(eta_chat_s=7))
    again = EtaEstimator(tmp_path / "eta.json")
    assert again.config.eta_chat_s == 7 and again.config.eta_half_duplex_s == 180


async def test_queue_positions_contiguous_after_removals():
    q = WaitQueue(capacity=5)
    ts = [q.append(Ticket(request_type="chat")) for _ in range(5)]
    assert [t.position for t in ts] == [1, 2, 3, 4, 5]
    with pytest.raises(QueueFull, match=r"Queue full \(5 requests\)"):
        q.append(Ticket(request_type="chat"))
    q.remove(ts[1], "cancelled")
    q.remove(ts[3], "client left")
    q.refresh(everyone=False)
    live = [t for t in ts if t.cancelled is None]
    assert [t.position for t in live] == [1, 2, 3] and all(t.queue_length == 3 for t in live)
    assert ts[1].cancelled == "cancelled" and ts[1].event.is_set()
