"""PolicyServer with an asynchronous *dispatch handler* and several models (the hooks the Ray fleet uses; no Ray).

The handler here is a small in-process fleet: requests wait until the test frees a slot, are answered from
another thread, and every dispatch is recorded, so the order the server hands work over can be checked.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import pytest

from robot_stack.errors import PolicyError, RequestTimeoutError, ServerError
from robot_stack.transport import PolicyClient, PolicyServer
from robot_stack.transport.protocol import ArraySpec
from robot_stack.transport.server import BatchItem, ModelRoute, Result
from tests.conftest import wait_until


class SlotFleet:
    """A dispatch handler with ``slots`` free places; answers each request on a thread of its own."""

    def __init__(self) -> None:
        self.slots = 0
        self.cond = threading.Condition()
        self.dispatched: list[BatchItem] = []
        self.fail_with: BaseException | None = None

        def one_state_array(specs: Sequence[ArraySpec]) -> None:
            if [s.name for s in specs] != ["state"]:
                raise PolicyError(f"m1 takes one array 'state', got {[s.name for s in specs]}")

        self.routes = {
            "m1": ModelRoute("m1", {}, one_state_array, lambda: {"horizon": 8}),
            "m2": ModelRoute("m2", {"rgb": "png"}, None, lambda: {"horizon": 4}),
        }

    def open(self, n: int) -> None:
        with self.cond:
            self.slots += n
            self.cond.notify_all()

    def free_slots(self, timeout_s: float) -> int:
        with self.cond:
            if self.slots <= 0:
                self.cond.wait(timeout_s)
            return max(0, self.slots)

    def dispatch(self, items: Sequence[BatchItem], done: Callable[[int, Result], None]) -> None:
        with self.cond:
            self.slots -= len(items)
            self.dispatched.extend(items)

        def answer(i: int, item: BatchItem) -> None:
            reply = ({"x": np.ones(1, np.float32)}, {"robot": item.robot, "model": item.model})
            result: Result = self.fail_with or reply
            with self.cond:
                self.slots += 1
                self.cond.notify_all()
            done(i, result)

        for i, item in enumerate(items):
            threading.Thread(target=answer, args=(i, item), daemon=True).start()


@pytest.fixture
def fleet() -> Iterator[tuple[SlotFleet, PolicyServer]]:
    handler = SlotFleet()
    with PolicyServer(handler, bind="tcp://127.0.0.1:*") as server:
        yield handler, server


STATE = {"state": np.zeros((1, 4), np.float32)}


def test_work_is_handed_over_earliest_deadline_first_and_expired_work_never(
    fleet: tuple[SlotFleet, PolicyServer],
) -> None:
    handler, server = fleet
    budgets = {"A": 5.0, "B": 0.15, "C": 2.0, "D": 3.0}
    outcome: dict[str, Any] = {}

    def robot(name: str) -> None:
        with PolicyClient(server.endpoint, name, timeout_s=budgets[name]) as client:
            try:
                outcome[name] = client.infer(STATE).meta["robot"]
            except Exception as exc:
                outcome[name] = exc

    threads = [threading.Thread(target=robot, args=(n,)) for n in budgets]
    for t in threads:
        t.start()
    # the fleet is full: B's deadline passes in the queue, and it is answered without ever being handed over
    assert wait_until(lambda: server.stats()["deadline_exceeded"] == 1, timeout_s=5)
    assert wait_until(lambda: server.stats()["queued"] == 3, timeout_s=5)
    assert handler.dispatched == []
    handler.open(1)  # one request at a time from now on: the order shows the server's choice
    for t in threads:
        t.join(10)
    assert [item.robot for item in handler.dispatched] == ["C", "D", "A"]
    assert isinstance(outcome["B"], RequestTimeoutError)
    assert {outcome[n] for n in "ACD"} == {"A", "C", "D"}
    assert all(item.deadline_ns is not None and item.model == "m1" for item in handler.dispatched)


def test_requests_are_routed_to_the_model_they_name(fleet: tuple[SlotFleet, PolicyServer]) -> None:
    handler, server = fleet
    handler.open(4)
    with (
        PolicyClient(server.endpoint, "r1", timeout_s=5) as default,
        PolicyClient(server.endpoint, "r2", timeout_s=5, model_id="m2") as second,
    ):
        assert default.infer(STATE).meta["model"] == "m1"  # no model named: the first route
        assert second.infer({"rgb": np.zeros((2, 2, 3), np.uint8)}).meta["model"] == "m2"
        assert default.metadata()["horizon"] == 8 and second.metadata()["horizon"] == 4
        assert second.metadata()["compression"] == {"rgb": "png"} and second.metadata()["models"] == ["m1", "m2"]
        with pytest.raises(ServerError) as info:
            default.infer({"rgb": np.zeros((2, 2, 3), np.uint8)})  # m1's check refuses it before any decoding
        assert info.value.code == "policy_error"  # type: ignore[attr-defined]
    with PolicyClient(server.endpoint, "r3", timeout_s=5, model_id="m3") as other, pytest.raises(ServerError) as info:
        other.infer(STATE)
    assert info.value.code == "model_mismatch"  # type: ignore[attr-defined]
    assert [item.model for item in handler.dispatched] == ["m1", "m2"]
    assert server.stats()["infer_ok"] == 2


def test_a_deadline_result_is_answered_deadline_exceeded(fleet: tuple[SlotFleet, PolicyServer]) -> None:
    handler, server = fleet
    handler.open(1)
    handler.fail_with = RequestTimeoutError("ran out of time in the fleet after 1 failed replica")
    with PolicyClient(server.endpoint, "r1", timeout_s=5) as client, pytest.raises(ServerError) as info:
        client.infer(STATE)
    assert info.value.code == "deadline_exceeded"  # type: ignore[attr-defined]
    assert "failed replica" in str(info.value)
    assert server.stats()["deadline_exceeded"] == 1
