"""The benchmarks of ``just bench``, one package imported as ``bench.…`` from the repository root.

``bench.micro`` (``python -m bench.micro``: micro-benchmarks and the gateway's memory),
``bench.harness`` (the HTTP load harness behind ``bench/run_bench.py``), ``bench.peers`` (the
Python comparison proxies, ``python -m bench.peers --check``), ``bench.bench_routing`` (route
matching) and ``bench.procs``, the one module of process helpers they share: child processes
started and stopped by PID, free ports, readiness polled with a deadline, ``/proc`` readings.
``bench/tools/streamload.c`` is no Python: the WebSocket and SSE load tool and backends that
the harness compiles with gcc when a streaming profile runs (``bench.harness.streamload``).
Run them from the repository root (``just bench`` does); ``bench/run_bench.py`` also runs as a
file from anywhere.
"""
