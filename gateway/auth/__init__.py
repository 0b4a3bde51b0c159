"""Who is asking: the authenticator contract, the local user store, the LDAP authenticator and its
LDAP connections.
"""
