"""Bascule's domain: manifests, policy, storage seam and migration logic.

Nothing in this package imports Airflow, so every piece can be tested alone.
"""
