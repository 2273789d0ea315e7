"""HTTP load harness of ``just bench`` (issue #5, SPEC §15).

Runs NGINX as the shared upstream, puts each product in front of it (NGINX as a reverse proxy,
a3s_gateway with one and with N workers, the Python peers of ``bench/peers``), drives each with
``wrk`` (HTTP/1.1), ``h2load`` (HTTP/2, h2c and gRPC) or ``streamload`` (WebSocket and SSE, the
harness's own C tool in ``bench/tools/``, with its own backends) and writes ``bench/results/``:
the raw run as JSON, ``latest.md`` (the table the README embeds) and ``latest.png`` (throughput
ratios to NGINX). Entry point: ``bench/run_bench.py``.

Modules (child processes and free ports come from ``bench/procs.py``): ``nginx`` and ``gateway``
(config generation and commands), ``wrk`` (the Lua reporter and its parser), ``h2load`` (its
command, summary and per-request log), ``h2check`` (the HTTP/2 check request), ``streamload``
(building the C tool, its commands and summary), ``streamcheck`` (the WebSocket and SSE check
requests), ``environment``
(what machine and versions the numbers come from), ``plan`` (profiles and products),
``peerlink`` (the lazy link to ``bench/peers``), ``cputime`` (a product's CPU time from
``/proc``), ``runner`` (the trial loop), ``report`` (medians, ratios, CPU µs per request, the
SPEC §15 and issue #15 verdicts, Markdown, chart) and ``cli``. The Debian packages of the load
tools are installed by ``install-debian-packages.sh`` (first step of ``just bench``).
"""
