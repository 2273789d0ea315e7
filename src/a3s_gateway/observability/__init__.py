"""Observability (SPEC §9): what the gateway tells about itself, as pure code (Ring 0, but
``applog.py``, which installs the application log's handler: Ring 1).

- ``metrics.py``: the metric cells the request path updates, their frozen snapshots, the
  multi-worker merge, and the exposition through ``prometheus_client``;
  ``gateway_metrics.py``: the gateway's families and the events and scrape-time reads that
  feed them; ``process.py``: the ``process_*`` sample parsed from ``/proc`` texts.
- ``record.py``: ``ExchangeRecord``, what one exchange leaves for metrics, the access log and
  tracing; ``accesslog.py``: the access-log line; ``tracing.py``: spans and trace context.
- ``applog.py``: the application log's formatting and its installation on stderr.

May import: the standard library, msgspec, ``prometheus_client`` (its public API; never its
global ``REGISTRY``), ``a3s_gateway.config``, ``errors``, ``version`` and, for types only, the
data plane it describes. Must not import trio, sockets, TLS or the clock (the shell reads files,
time and ``/proc`` and hands the results in: ``server/observe.py``, ``server/process_metrics.py``,
``server/accesslog_writer.py``).
"""
