"""Evaluation step: candidate metrics, curves, scoring latency and the champion comparison."""
