"""The WebDAV side of clindav: the wsgidav middleware and provider, PROPFIND, locks, request limits
and guards, client junk, cross-share moves, destinations, placement, manifests, the root
collection and dead properties.
"""
