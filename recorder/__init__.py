"""Recorder: MQTT telemetry and events -> InfluxDB 1.x / 2.x / 3.x, VictoriaMetrics or SQLite.

Runtime code; never imports simulators. See docs/mqtt.md for the message contract.
"""
