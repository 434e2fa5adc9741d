"""Build tooling: the package's PEP 517 backend and the mypyc build of the twin's hot modules."""
