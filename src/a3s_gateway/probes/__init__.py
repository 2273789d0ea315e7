"""Active health probers (Ring 1): ``checker.py`` dials each backend on its interval, sends
the configured request and feeds the outcome to the pure ``services.health`` state machine;
``broadcast.py`` is the supervisor's side of ``run --workers N``: it runs those probers once for
all workers and keeps the verdicts that are pushed to them (SPEC §7.4 "Multi-worker", §13.4).

Nurseries: ``checker.py`` owns none (a single process runs its probers in the nursery of the
config generation that started them, ``server/generation.py``); ``broadcast.FleetProbes.run``
owns the supervisor's probers, one nursery per config generation. May import ``protocols``,
``services``, ``upstream``, ``observability`` and ``config`` values; nothing in Ring 0 imports
this package.
"""
