"""Administration of an instance: creating it, migrating legacy shares, checking them (fsck),
master-key rotation, progress output and TLS certificates.
"""
