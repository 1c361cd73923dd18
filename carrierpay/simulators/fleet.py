"""The four HTTP carrier simulators as one fleet, with the credentials they are started with and the
shipped carrier specs pointed at them. Shared by the demo (`carrierpay demo`), the daemon tests and
the benchmarks, so every one of them runs the same carriers the same way.

The secrets here are simulator credentials, not real ones: a simulator is started with them, and
the connectors are handed the same values.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from carrierpay.paths import carriers_root
from carrierpay.simulators.aggregator import AggregatorSimulator
from carrierpay.simulators.base import SimClock
from carrierpay.simulators.batch import BatchSimulator
from carrierpay.simulators.oneapi import OneApiSimulator
from carrierpay.simulators.parlayx import ParlayXSimulator

ONEAPI_GB_SECRETS = {"ONEAPI_GB_CLIENT_ID": "carrierpay-gb", "ONEAPI_GB_CLIENT_SECRET": "gb-client-secret-7f3a",
                     "ONEAPI_GB_MO_USERNAME": "carrierpay-gb-mo", "ONEAPI_GB_MO_PASSWORD": "gb-mo-password-2b6d"}
BATCH_IN_SECRETS = {"BATCH_IN_USERNAME": "carrierpay-in", "BATCH_IN_PASSWORD": "in-batch-password-3e8b"}
PARLAYX_ZA_SECRETS = {"PARLAYX_ZA_SP_ID": "000201", "PARLAYX_ZA_SP_PASSWORD": "za-sp-password-91c2"}
AGGREGATOR_NG_SECRETS = {
    "AGGREGATOR_NG_API_KEY": "ng-api-key-55aa",
    "AGGREGATOR_NG_API_SECRET": "ng-signing-secret-0c9e",
    "AGGREGATOR_NG_CALLBACK_SECRET": "ng-callback-secret-77d1",
}
SECRETS = {**ONEAPI_GB_SECRETS, **PARLAYX_ZA_SECRETS, **AGGREGATOR_NG_SECRETS, **BATCH_IN_SECRETS}

# The shipped HTTP carriers the fleet simulates, in a stable order.
CODES = ("oneapi_gb", "parlayx_za", "aggregator_ng", "batch_in")


def make_simulators(clock: SimClock, seed: int = 7, codes: tuple[str, ...] | list[str] = CODES) -> dict[str, Any]:
    """One simulator per carrier code (not started), all on one simulated clock."""
    builders = {
        "oneapi_gb": lambda: OneApiSimulator(client_id=ONEAPI_GB_SECRETS["ONEAPI_GB_CLIENT_ID"],
                                             client_secret=ONEAPI_GB_SECRETS["ONEAPI_GB_CLIENT_SECRET"],
                                             mo_username=ONEAPI_GB_SECRETS["ONEAPI_GB_MO_USERNAME"],
                                             mo_password=ONEAPI_GB_SECRETS["ONEAPI_GB_MO_PASSWORD"],
                                             clock=clock, seed=seed),
        "parlayx_za": lambda: ParlayXSimulator(sp_id=PARLAYX_ZA_SECRETS["PARLAYX_ZA_SP_ID"],
                                               sp_password=PARLAYX_ZA_SECRETS["PARLAYX_ZA_SP_PASSWORD"],
                                               clock=clock, seed=seed),
        "aggregator_ng": lambda: AggregatorSimulator(
            api_key=AGGREGATOR_NG_SECRETS["AGGREGATOR_NG_API_KEY"],
            api_secret=AGGREGATOR_NG_SECRETS["AGGREGATOR_NG_API_SECRET"],
            callback_secret=AGGREGATOR_NG_SECRETS["AGGREGATOR_NG_CALLBACK_SECRET"],
            clock=clock, seed=seed),
        "batch_in": lambda: BatchSimulator(username=BATCH_IN_SECRETS["BATCH_IN_USERNAME"],
                                           password=BATCH_IN_SECRETS["BATCH_IN_PASSWORD"], clock=clock, seed=seed),
    }
    return {code: builders[code]() for code in codes}


def spec_for(code: str, base_url: str, *, tps: int | None = 1000, rules: dict | None = None,
             timeout_s: float | None = 2.0, connect_s: float = 1.0) -> dict:
    """A copy of the shipped spec carriers/<code>/carrier.yaml pointed at a simulator. `tps` replaces
    the spec's throughput (None keeps it); `timeout_s` shortens the timeouts so a lost answer is
    noticed quickly (None keeps the spec's); `rules` replaces the carrier's rule overrides."""
    spec = copy.deepcopy(yaml.safe_load((carriers_root() / code / "carrier.yaml").read_text()))
    spec["base_url"] = base_url
    if tps is not None:
        spec["throughput"] = {"tps": tps}
    if rules is not None:
        spec["rules"] = rules
    if timeout_s is not None:
        spec["timeouts"] = {"connect_s": connect_s, "total_s": timeout_s}
        for operation in spec["operations"].values():
            operation.pop("timeout_s", None)
    return spec
