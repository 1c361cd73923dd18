"""Realistic carrier simulators for tests, the demo and benchmarks; each keeps its own ledger."""

from carrierpay.simulators.aggregator import AggregatorSimulator
from carrierpay.simulators.base import Faults, Ledger, SimClock, Simulator
from carrierpay.simulators.batch import BatchSimulator
from carrierpay.simulators.camara import CamaraSimulator
from carrierpay.simulators.oneapi import OneApiFlavor, OneApiSimulator
from carrierpay.simulators.parlayx import ParlayXSimulator

__all__ = [
    "AggregatorSimulator",
    "BatchSimulator",
    "CamaraSimulator",
    "Faults",
    "Ledger",
    "OneApiFlavor",
    "OneApiSimulator",
    "ParlayXSimulator",
    "SimClock",
    "Simulator",
]
