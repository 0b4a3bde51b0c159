"""Encryption at rest: the CLDV content format, data-key wrapping, name encryption.

- :mod:`gateway.crypto.fileformat`: the chunked AES-256-GCM file format (spec in
  its module docstring and in ``docs/FORMAT.md``).
- :mod:`gateway.crypto.keywrap`: per-file data keys wrapped by a master key.
- :mod:`gateway.crypto.names`: deterministic AES-SIV encryption of path segments.
"""
