"""Composition root: the ``hypoxia`` command wires controller, drivers and simulators together."""
