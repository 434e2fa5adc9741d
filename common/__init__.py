"""Small pieces every layer may use: the injected clock, back-off, configuration errors.

Imports nothing else of this project, so drivers, controller, telemetry and recorder can all
depend on it without depending on one another.
"""
