"""The ``clindav`` command line.

``main`` builds the parser from the light specs in ``options/`` and runs a
command by importing its group's module from one table; every command is a
function ``NAME(ctx: CommandContext, args) -> int`` whose context builds the
settings, database or services its spec declares (``context``).
"""
