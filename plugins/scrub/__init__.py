"""Metadata scrubbers: the contract (``base``), one scrubber per format (jpeg,
png, tiff, webp, gif, heif, isobmff_video), the structure readers they share
(``exif``: TIFF/EXIF IFDs and the minimal EXIF; ``bmff``: ISO BMFF boxes;
``heif_meta``: HEIF items; ``icc``: ICC profiles) and the ``scrub`` stage
(``stage``).  The format table (plugins/formats.py) says which scrubber
cleans which format.
"""
