"""Shared adapter layers every adapter strategy builds on (DESIGN.md §6); all compute through cl_suite.kernels."""

from cl_suite.adapters.bank import AdapterBankStrategy
from cl_suite.adapters.inject import inject, select_targets
from cl_suite.adapters.linear import GATE_MODES, AdapterLinear, RankGroup, bank_parameters
from cl_suite.adapters.mixture import AdapterMixture, BottleneckExpert

__all__ = ["GATE_MODES", "AdapterBankStrategy", "AdapterLinear", "AdapterMixture", "BottleneckExpert", "RankGroup", "bank_parameters", "inject",
           "select_targets"]  # fmt: skip
