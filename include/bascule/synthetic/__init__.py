"""Synthetic, never real, health data for tests, demos and benchmarks; nothing in the domain but the example shadow jobs imports it."""
