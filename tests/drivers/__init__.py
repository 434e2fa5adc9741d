"""Driver-layer tests: real protocol stacks against the wire-level simulators on loopback."""
