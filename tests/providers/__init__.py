"""Tests of the config providers and the reload path (SPEC §10)."""
