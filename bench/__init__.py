"""clindav's benchmark harness: clindav beside plain WsgiDAV (and optional peers).

Run from the repository root with ``python -m bench`` (see docs/BENCHMARKS.md).
Every figure is measured on loopback against real server processes; results
go to ``bench/results/<timestamp>.json`` and ``.md`` (git-ignored).
"""
