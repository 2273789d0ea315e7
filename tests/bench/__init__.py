"""Tests of the benchmark harness (``bench/harness``): parsing the load tools' output and
rendering the configs of NGINX and the gateway, without running any load."""
