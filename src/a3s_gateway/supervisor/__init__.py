"""Process supervision for ``run --workers N``: ``workers.py`` binds the listeners, spawns the
worker processes, restarts the ones that die, forwards reloads and signals, runs the active
health probes once for all workers and pushes their verdicts (``probes/broadcast.py``), and
serves the merged management view; ``worker_main.py`` is a worker's entry point (it runs an
ordinary ``Gateway`` built from the supervisor's validated config, on the sockets it was handed,
without probers of its own).

Ring 1 (processes, pipes, signals). Imports the composition root (``app``) to run a worker and
``management`` for the fleet view; nothing on the request path imports this package.
"""
