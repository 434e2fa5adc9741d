"""``python -m hypoxia`` is the ``hypoxia`` command."""

from hypoxia.cli import main

main()
