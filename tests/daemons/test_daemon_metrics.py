"""The adapter daemon counts what it sends and what carriers answer, per carrier, operation and outcome."""

from __future__ import annotations

from harness import CARRIERS, World, msisdn

from carrierpay import metrics


def _count(counter, **labels) -> float:
    return counter.labels(**labels)._value.get()


async def test_sent_calls_and_outcomes_are_counted(db_url):
    carrier = "oneapi_gb"
    sent = _count(metrics.CALLS_SENT, carrier=carrier, operation="charge")
    succeeded = _count(metrics.CALL_OUTCOMES, carrier=carrier, operation="charge", outcome="succeeded")
    failed = _count(metrics.CALL_OUTCOMES, carrier=carrier, operation="charge", outcome="failed")
    timed = metrics.CALL_DURATION.labels(carrier=carrier, operation="charge")._sum.get()
    async with World(db_url, carriers=[carrier]) as world:
        sim = world.sims[carrier]
        rich, poor = msisdn(carrier, 201), msisdn(carrier, 202)
        sim.add_subscriber(rich, CARRIERS[carrier][2] * 3)
        sim.add_subscriber(poor, 0)
        paid = await world.charge(rich, "metrics-1")
        refused = await world.charge(poor, "metrics-2")
        assert await world.wait_status(paid) == "succeeded"
        assert await world.wait_status(refused) == "failed"
    assert _count(metrics.CALLS_SENT, carrier=carrier, operation="charge") == sent + 2
    assert _count(metrics.CALL_OUTCOMES, carrier=carrier, operation="charge", outcome="succeeded") == succeeded + 1
    assert _count(metrics.CALL_OUTCOMES, carrier=carrier, operation="charge", outcome="failed") == failed + 1
    assert metrics.CALL_DURATION.labels(carrier=carrier, operation="charge")._sum.get() > timed
