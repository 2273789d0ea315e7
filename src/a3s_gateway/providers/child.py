"""The candidate-builder child process: ``python -m a3s_gateway.providers.child``.

Ring 2 for its own process (it owns stdin and stdout). It answers ``candidate.Request`` frames
on stdin with ``candidate.Built`` frames on stdout (wire format: ``providers/candidate.py``),
until end-of-file on stdin. Kept apart from ``candidate.py`` so that ``-m`` runs a module the
package did not import first.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import BinaryIO

from a3s_gateway.config.problems import Problem
from a3s_gateway.providers.candidate import (
    HEADER,
    Built,
    build_candidate,
    encoder,
    request_decoder,
)


def _read_exactly(stream: BinaryIO, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = stream.read(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def child_main() -> int:
    """``python -m a3s_gateway.providers.child``: answer build requests until stdin ends."""
    # Ctrl-C reaches the whole process group; the parent decides when this child ends.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    requests = sys.stdin.buffer
    # Frames only on the real stdout: anything else that prints goes to stderr.
    frames = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    while True:
        header = _read_exactly(requests, HEADER.size)
        if header is None:
            return 0
        (length,) = HEADER.unpack(header)
        body = _read_exactly(requests, length)
        if body is None:
            return 0
        request = request_decoder.decode(body)
        try:
            built = build_candidate(request.path, workers=request.workers)
        except Exception as error:  # a bug in the pipeline: report it, keep serving
            problem = Problem(
                severity="error",
                file=request.path,
                line=None,
                column=None,
                path="",
                message=f"internal error while loading the config: {error!r}",
            )
            built = Built(problems=(problem,), config=None)
        answer = encoder.encode(built)
        frames.write(HEADER.pack(len(answer)) + answer)
        frames.flush()


if __name__ == "__main__":
    sys.exit(child_main())
