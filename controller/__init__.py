"""Control: the pure core, the running service and the offline engineering tools.

- :mod:`controller.core` — what the digital twin and the service both run each cycle: loops,
  recipes, the recipe engine, the exposure clock, interlocks and alarms. No I/O, no clock reads.
- :mod:`controller.service` — the running service: the 1 s cycle, resume policy, watchdog,
  commands, run journal, audit trail, MQTT link.
- :mod:`controller.engineering` — offline tools: relay autotuning, loop analysis, gas forecast,
  tuning files.
"""
