"""Core: errors, atomic writes, provenance, the cache folder, conventions and record reading.

The bottom layer: imports nothing else from ``circuits`` and no model library.
"""
