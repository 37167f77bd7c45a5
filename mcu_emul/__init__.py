"""mcu_emul: a Transformer on a cluster of tiny MCUs, int8 and over real MPI.

The Python API (see README "Python API"):
    run(model, chips, **options) -> Report      one configuration
    sweep(model, grid, dry_run=True, **options) -> list[Report]
    plan(model, latency_ms=None, energy_mj=None, **options) -> Plan   deployment planner (dry runs)
    Report                                      the JSON report as an object
    UserError                                   what bad input raises (the CLI's `mcu_emul: error:`)
"""
from ._version import __version__

__all__ = ["run", "sweep", "plan", "Report", "Plan", "UserError", "__version__"]


def __getattr__(name):            # imported on first use: `import mcu_emul` stays cheap
    if name in ("run", "sweep"):
        from . import api
        return getattr(api, name)
    if name in ("plan", "Plan"):
        from . import planner
        return getattr(planner, name)
    if name == "Report":
        from .files.report import Report
        return Report
    if name == "UserError":
        from .errors import UserError
        return UserError
    raise AttributeError(f"module 'mcu_emul' has no attribute {name!r}")
