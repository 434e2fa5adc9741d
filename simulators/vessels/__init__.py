"""Reference vessel parameter files (TOML), loaded by :mod:`simulators.vessel`."""
