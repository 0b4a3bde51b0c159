"""Where the bytes live: the backing share and its atomic writes, content binding, content keys and
the key store, and the share markers.
"""
