"""Avalanche's classic strategies as cl-suite baselines (``avalanche-<name>``); see adapter.py for the design."""
