"""The running control service (``hypoxia run``).

``runner`` (one reactor's 1 s cycle), ``resume`` (restart policy), ``watchdog``, ``shaping``
(snapshots and MQTT messages of a cycle), ``actuators`` (verified writes, safe state),
``commands`` (operator commands to typed intents), ``journal``, ``audit``, ``mqtt_link``,
``app`` (builds and runs the whole service), ``site`` (the site file), ``clock``.
"""
