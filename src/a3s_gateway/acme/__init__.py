"""Automatic certificates from an ACME CA (RFC 8555; SPEC §12): domains, orders, challenges,
storage and renewal.

Ring 0 as a package: this ``__init__`` imports nothing, so that the pure modules (``order_plan.py``,
``keys.py``, ``board.py``) load without trio. The shell's modules are ``storage.py`` (the
directory on disk), ``issuer.py`` (the RFC 8555 client, run in worker threads), ``dns01.py``
(the DNS-01 providers), ``solvers.py`` (challenges presented and cleaned up) and
``manager.py`` (the schedule that orders, stores, renews and publishes certificates).

May import ``config``, ``errors``, ``version``, ``routing`` (the plan reads the routers' rules)
and ``providers`` (the manager is the hub's ``acme`` provider and publishes its snapshots);
never ``server``, ``app``, ``management``, ``supervisor`` or ``cli``, which call it.
"""
