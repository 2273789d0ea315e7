"""The runtime snapshot: ``compile.py`` turns a validated ``Config`` into the immutable
``RuntimeConfig`` the data plane reads (route tables, balancers, middleware chains, pool
settings), the one object a reload swaps.

Ring 0: pure compilation, no trio, sockets or clock. This is the one package that may import
every other Ring 0 package (``config``, ``routing``, ``middleware``, ``services``,
``protocols``, ``observability`` and ``upstream``'s pure ``peer``); it imports no Ring 1 module
at runtime, and ``config/`` never imports it back.
"""
