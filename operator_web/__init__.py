"""The operator page (``hypoxia run`` serves it) and the notifications (docs/operator.md).

Runtime packages never import this one; it builds on :mod:`controller.service`: live state from
the runners, every command through the one :class:`~controller.service.commands.CommandProcessor`.
"""
