"""The options of every ``clindav`` command, as :mod:`gateway.cli.spec` specs.

Light by contract: built into the parser on every run, so nothing here imports
more than the standard library (tests/unit/test_cli_start.py checks).
"""
