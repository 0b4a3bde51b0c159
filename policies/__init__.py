"""Shipped policy files (YAML) and the JSON schema they follow.

``default.yaml`` encodes ../shared/DOMAIN.md for a practice's usual shares;
``schema.json`` is generated from :mod:`gateway.policy` (a test keeps it in
step) so editors can validate policy files.
"""

from importlib.resources import files
from pathlib import Path


def shipped_policy(name: str = "default.yaml") -> Path:
    """Path of a policy file shipped with clindav."""
    return Path(str(files(__name__).joinpath(name)))
