"""Airflow glue for Bascule: thin operators and clients over the domain in ``bascule``.

Modules here are imported by every Airflow component's plugin manager, so they keep
their imports light: SDKs and hooks are imported inside the functions that use them.
"""
