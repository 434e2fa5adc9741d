"""The telemetry contract shared by the controller and the recorder.

MQTT topics and message payloads (docs/mqtt.md), the broker and store sections of the site file,
the MQTT client factory and the embedded broker of the zero-setup default. Imports only
:mod:`common`: the controller and the recorder both build on it without reaching into each other.
"""
