"""Governing a migration, for both kinds: HDS/sovereignty policy, approvals, the evidence chain, and the routing registry."""
