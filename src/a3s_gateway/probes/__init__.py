"""Active health probers (Ring 1): ``checker.py`` dials each backend on its interval, sends
the configured request and feeds the outcome to the pure ``services.health`` state machine.

Owns no nursery of its own: the probe loops run in the nursery of the config generation that
started them (``server/generation.py``), or in the supervisor's when it probes for its workers.
May import ``protocols``, ``services``, ``upstream`` and ``config`` values; nothing in Ring 0
imports this package.
"""
