"""The live registry's two kinds of change: the fleet's, which routing's filters
read, and the router's own load, which only ranking reads."""

from __future__ import annotations

from mesh.clock import ManualClock
from mesh.registry import WorkerRegistry
from mesh.v1 import registry_pb2

MODEL = "org/model"


def hello(worker_id: str = "w1") -> registry_pb2.Hello:
    status = registry_pb2.WorkerStatus(
        ready=True,
        bundle="default",
        machine_profile="l4",
        queue_capacity=8,
        max_batch_requests=4,
        models=[registry_pb2.ModelStatus(name=MODEL, state=registry_pb2.MODEL_STATE_LOADED, queue_depth=1)],
    )
    return registry_pb2.Hello(worker_id=worker_id, instance_uid="u1", backend="fake", status=status)


async def test_tasks_move_the_routing_row_but_not_the_fleet_version() -> None:
    registry = WorkerRegistry(ManualClock())
    session = registry.new_session(hello())
    registry.attach(session)
    version = registry.fleet_version
    assert session.view().queue_depth == 1  # the worker's own report

    session.open_task("t1")
    session.open_task("t2")
    assert session.view().queue_depth == 2  # the router's in-flight count is larger
    assert registry.snapshot()[0].queue_depth == 2
    session.finish_task("t1")
    session.finish_task("t2")
    assert session.view().queue_depth == 1
    assert registry.fleet_version == version


async def test_every_fleet_change_bumps_the_version_and_refreshes_the_rows() -> None:
    registry = WorkerRegistry(ManualClock())
    session = registry.new_session(hello())
    registry.attach(session)
    seen = {registry.fleet_version}
    before = session.view()

    report = registry_pb2.WorkerStatus()
    report.CopyFrom(session.status)
    report.ready = False
    session.apply_status(report)
    assert registry.fleet_version not in seen
    seen.add(registry.fleet_version)
    assert session.view() is not before and not session.view().ready

    session.set_draining()
    assert registry.fleet_version not in seen and session.view().draining
    seen.add(registry.fleet_version)

    session.set_pool_override("tenant")
    assert registry.fleet_version not in seen and session.view().pool == "tenant"
    seen.add(registry.fleet_version)

    session.close("test")
    assert registry.fleet_version not in seen and session.view().ejected
    seen.add(registry.fleet_version)
    registry.detach(session)
    assert registry.fleet_version not in seen and registry.snapshot() == ()


async def test_rows_are_shared_until_something_changes() -> None:
    registry = WorkerRegistry(ManualClock())
    session = registry.new_session(hello())
    registry.attach(session)
    idle = session.view()
    session.open_task("t1")
    assert session.view() is not idle
    session.finish_task("t1")
    assert session.view() is idle  # same in-flight count, same state: the same immutable row
