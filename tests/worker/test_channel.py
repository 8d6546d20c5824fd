"""WriteFlow, the one backpressure object of both adapters (worker/channel.py)."""

from __future__ import annotations

from preforkd.worker.channel import WriteFlow


def test_writers_wait_while_paused_and_wake_on_release() -> None:
    flow, woken = WriteFlow(), []
    flow.pause(100.0)
    flow.wait("a", lambda: woken.append("a"))
    flow.wait("b", lambda: woken.append("b"))
    flow.release()
    assert woken == [], "nobody writes while the transport is paused"
    flow.resume()
    flow.release(lambda key: key == "b")  # e.g. only b's stream is below its high water
    assert woken == ["b"]
    flow.release()
    assert woken == ["b", "a"]


def test_release_key_wakes_one_writer_whatever_the_state() -> None:
    flow, woken = WriteFlow(), []
    flow.pause(0.0)
    flow.wait("a", lambda: woken.append("a"))
    flow.wait("b", lambda: woken.append("b"))
    flow.release_key("a")  # its response is over: its next write fails at once
    assert woken == ["a"]
    flow.release_all()  # the connection is gone
    assert woken == ["a", "b"]


def test_overdue_only_past_the_timeout_and_only_while_paused() -> None:
    flow = WriteFlow()
    assert flow.overdue(1000.0, 10.0) is None
    flow.pause(100.0)
    assert flow.overdue(109.0, 10.0) is None
    assert flow.overdue(111.0, 10.0) == 11.0
    flow.resume()
    assert flow.overdue(200.0, 10.0) is None
