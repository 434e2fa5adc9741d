"""The pure control core: process model, loops, recipes, recipe engine, exposure, safety, alarms.

Nothing here performs I/O, reads the wall clock or sleeps: time is passed in by the caller (the
digital twin in lockstep, or the service with an injected clock). Import contracts
(``[tool.importlinter]`` in pyproject.toml) keep it that way.
"""
