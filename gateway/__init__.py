"""clindav: a WebDAV gateway that protects clinical images on practice shares."""

__version__ = "0.1.0"
