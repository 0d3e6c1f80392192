"""Every registered strategy × every compatible tiny scenario, generated from the registry (no hand-kept table).

The checks are cl_suite.testing's, the same that `cl-suite check` and a plugin package's tests run: each pair runs
end to end on CPU in --tiny mode and must write a valid record with JSON strategy_stats; the run is resumed from
its first checkpoint and must reach the same evaluations, which catches strategy state a checkpoint would miss;
supports/requires must be what `cl-suite list` reads and refuse the scenarios they exclude. The second run with the
same seed runs on each strategy's quickest compatible tiny scenario only, to keep `make test` short.
"""

from __future__ import annotations

from cl_suite import registry
from cl_suite.testing import compatible, conformance_tests, tiny_scenarios


def test_every_strategy_has_a_tiny_scenario():
    covered = {st for st in registry.names("strategy") for sc in tiny_scenarios() if compatible(sc, st)}
    assert covered == set(registry.names("strategy")), f"untested strategies: {set(registry.names('strategy')) - covered}"


test_conformance = conformance_tests(*registry.names("strategy"), seed_scenarios=1)
