"""The ``clindav`` command line: ``main`` parses the command and hands its subcommands to the
modules here (audit, consent, ldap, locks, migrate, trash, upgrade).
"""
