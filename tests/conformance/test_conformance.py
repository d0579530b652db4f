"""Every scenario on every driver: each record must equal the scenario's expected one,
and the three drivers' records must equal each other.

The driver tests run first (all scenarios in-process, then on the broker, then on the
operator); ``test_drivers_agree`` runs last and compares what they recorded, so a
difference between drivers shows even where the expectation itself is in question.
"""

from __future__ import annotations

import pytest

from tests.conformance.conftest import Records, Skips
from tests.conformance.drivers import OperatorDriver, WorkerPools, run_cli
from tests.conformance.records import Record, render_differences, same
from tests.conformance.scenarios import SCENARIOS, Scenario
from tests.workers import watch

DRIVERS = ("in-process", "broker", "operator")

# How many scenarios ahead the Redis drivers start their workers (see WorkerPools).
PRESTART = 2

by_scenario = pytest.mark.parametrize("scenario", SCENARIOS, ids=str)


def _check(scenario: Scenario, driver: str, record: Record, records: Records) -> None:
    # Stored before the expectation is checked: the comparison needs it either way.
    records.setdefault(scenario.name, {})[driver] = record
    expected = scenario.expected
    if not same(record, expected):
        # The field-by-field diff says it all; pytest's own dict diff and the long
        # scenario reprs would only bury it.
        pytest.fail(
            f"{scenario.name} on {driver} differs from the expected record:\n"
            + render_differences({"expected": expected, driver: record}),
            pytrace=False,
        )


@by_scenario
def test_in_process(
    scenario: Scenario, cli_env: dict[str, str], conformance_records: Records
) -> None:
    record = run_cli(scenario, "in-process", cli_env)
    _check(scenario, "in-process", record, conformance_records)


@by_scenario
def test_broker(
    scenario: Scenario,
    cli_env: dict[str, str],
    conformance_redis: str,
    worker_pools: WorkerPools,
    conformance_records: Records,
    request: pytest.FixtureRequest,
) -> None:
    index = SCENARIOS.index(scenario)
    pool = worker_pools.start(scenario)
    worker_pools.prestart(SCENARIOS[index + 1 : index + 1 + PRESTART])
    worker_pools.wait_ready(scenario)
    watch(request, pool)
    try:
        record = run_cli(scenario, "broker", cli_env, broker=conformance_redis)
    finally:
        if all(later.queue != scenario.queue for later in SCENARIOS[index + 1 :]):
            worker_pools.release(scenario.queue)
    _check(scenario, "broker", record, conformance_records)


@by_scenario
def test_operator(
    scenario: Scenario, operator_driver: OperatorDriver, conformance_records: Records
) -> None:
    index = SCENARIOS.index(scenario)
    operator_driver.prepare(SCENARIOS[index : index + 1 + PRESTART])
    operator_driver.wait_ready(scenario)
    try:
        record = operator_driver.run(scenario)
    finally:
        if all(later.pipeline != scenario.pipeline for later in SCENARIOS[index + 1 :]):
            operator_driver.release(scenario)
    _check(scenario, "operator", record, conformance_records)


@by_scenario
def test_drivers_agree(
    scenario: Scenario, conformance_records: Records, conformance_skips: Skips
) -> None:
    records = conformance_records.get(scenario.name, {})
    skipped = conformance_skips.get(scenario.name, {})
    missing = [driver for driver in DRIVERS if driver not in records and driver not in skipped]
    if missing:
        pytest.fail(f"no record from {', '.join(missing)} (see its failure)", pytrace=False)
    present = {driver: records[driver] for driver in DRIVERS if driver in records}
    first, *others = present.values()
    if not all(same(first, other) for other in others):
        pytest.fail(
            f"the drivers disagree on {scenario.name}:\n" + render_differences(present),
            pytrace=False,
        )
    if skipped:
        why = "; ".join(f"{driver}: {reason}" for driver, reason in skipped.items())
        pytest.skip(f"{' and '.join(present)} agree, but not every driver ran ({why})")
