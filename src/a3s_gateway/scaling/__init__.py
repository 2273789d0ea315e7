"""Knative-style autoscaling (SPEC §11): the KPA decider, concurrency metrics, the
scale-from-zero buffer, revisions and their traffic split, the rollout controller, the
executors and the trio loop that drives them.

Ring 0 for ``autoscaler``, ``concurrency``, ``revisions``, ``rollout`` and ``service`` (pure:
``runtime/compile.py`` builds the pools and splits from them); Ring 1 for ``buffer``, ``live``,
``host``, ``loop`` and the executors. The package's ``__init__`` imports nothing, so its pure
modules load without the shell's. It may import ``config``, ``errors``, ``version``,
``observability`` (the scaling metric families), ``services``, ``middleware`` (the request
key functions), ``protocols`` and ``upstream``.
"""
