"""The pure control core: process model, loops, recipes, recipe engine, exposure, safety, alarms.

Nothing here performs I/O, reads the wall clock or sleeps: time is passed in by the caller (the
digital twin in lockstep, or the service with an injected clock). Import contracts
(``[tool.importlinter]`` in pyproject.toml) keep it that way.
"""

from common.compiled import prefer_compiled

COMPILED = prefer_compiled(__path__)
"""Whether mypyc-compiled builds of the hot modules (``scripts/build-compiled``) are in use:
only when built from exactly the sources here; the pure-Python modules otherwise."""
