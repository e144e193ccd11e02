"""The scenarios of `warmlm bench`, found by module: each one defines `SCENARIO`."""

from __future__ import annotations

import importlib
import pkgutil

from warmlm.bench.scenarios.base import Scenario


def all_scenarios() -> list[Scenario]:
    """Every scenario module's `SCENARIO`, in run order."""
    found: list[Scenario] = []
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_") or info.name == "base":
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        scenario = getattr(module, "SCENARIO", None)
        if isinstance(scenario, Scenario):
            found.append(scenario)
    return sorted(found, key=lambda s: (s.order, s.name))
