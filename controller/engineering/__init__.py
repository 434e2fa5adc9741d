"""Offline engineering tools: relay autotuning, loop analysis, gas-cylinder forecast, tuning files.

Built on :mod:`controller.core`; never run inside the control cycle.
"""
