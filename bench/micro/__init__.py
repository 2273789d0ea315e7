"""Micro-benchmarks that need no load tool: config loading, the HTTP/1.1 adapters, memory.

``python -m bench.micro [--quick] [--json PATH]`` runs them all (see ``__main__``), plus the
route-table benchmark of ``bench/bench_routing.py``. Modules: ``config_parse`` (ms per config
load at 3/30/300 services), ``http1_adapter`` (µs per keep-alive request cycle through
``Http1Server`` and ``Http1Client``, no sockets), ``memory`` (the real gateway's RSS: idle, per
idle keep-alive connection, growth while streaming 1 GiB each way; its child processes and
``/proc`` readings come from ``bench/procs.py``). Each module also runs alone with
``python -m bench.micro.NAME``. The numbers compare runs on one machine; the gateway's request
rate against NGINX comes from ``bench/run_bench.py``.
"""
