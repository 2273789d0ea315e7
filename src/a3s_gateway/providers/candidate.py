"""Building a reload candidate off the event loop, in a child process (SPEC §3.1, §10.1).

Ring 1 (trio processes). Parsing HCL costs about 1 s per 300 routers of pure-Python CPU; in a
thread it would still hold the GIL the event loop needs, so it runs in a separate interpreter:
``CandidateBuilder`` keeps one child (``python -m a3s_gateway.providers.child``) and asks it
for each candidate. The child runs the whole pipeline the CLI runs at start — ``load`` (read,
parse, conf.d merge, interpolate, convert, semantic checks) and the environment checks of
``preflight.check`` — and answers with every problem, a digest of the files it read
(``content_digest``) and, when there was no error, the config encoded as msgpack. The parent
rebuilds the exact ``Config`` with ``msgspec`` and the value classes' hooks
(``config.values``): value classes travel as their text, so ``Duration("1m")`` comes back as
``Duration("1m")``, and the interpolated values (secrets, SPEC §14.4) travel alongside so that
the rebuilt config's redacted renderings hide them as the original's would. The problems come
redacted from the child.
The decode of a 300-router config takes well under a millisecond, where the parse took about
half a second.

Wire format, both directions: a 4-byte big-endian length, then a msgpack-encoded ``Request`` or
``Built``. The child's stdout carries only frames (anything printed goes to stderr); it ends on
end-of-file on stdin, so it never outlives its parent's pipe. The child inherits the parent's
environment (``${NAME}`` interpolation) and working directory (relative paths).

The child is started on first use (or ahead of it with ``start``) and kept for later builds:
starting an interpreter and importing the config pipeline costs about 0.6 s, which would
otherwise be added to every reload. A child that dies or does not answer within
``BUILD_TIMEOUT`` is killed and replaced on the next build.

Nurseries: none. Deadlines: ``BUILD_TIMEOUT`` per build. Must not: swap configs or log
problems (the aggregator does both).
"""

from __future__ import annotations

import contextlib
import hashlib
import struct
import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import msgspec
import trio

from a3s_gateway.config.load import LoadOptions, load
from a3s_gateway.config.problems import Problem
from a3s_gateway.config.schema import Config, remember_secrets, secrets_of
from a3s_gateway.config.values import dec_hook, enc_hook
from a3s_gateway.preflight import check

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "BUILD_TIMEOUT",
    "BuildError",
    "Candidate",
    "CandidateBuilder",
    "build_candidate",
    "content_digest",
    "decode_config",
    "encode_config",
    "rebuild",
]

#: Bound on one build in the child (a 16 MiB config parses in well under this).
BUILD_TIMEOUT: Final = 120.0
#: How long a child gets to exit after its stdin closed, before it is killed.
_EXIT_GRACE: Final = 2.0
#: The frame header: the payload's length.
HEADER: Final = struct.Struct(">I")
_READ_SIZE: Final = 65536


class Request(msgspec.Struct, frozen=True, tag="build"):
    """Parent → child: load ``path`` with these options."""

    path: str
    workers: int = 1


class Built(msgspec.Struct, frozen=True, tag="built"):
    """Child → parent: every problem (interpolated values redacted), and the msgpack-encoded
    config when there is no error, with its interpolated values (``schema.remember_secrets``:
    the redacted renderings of the rebuilt config must hide them too)."""

    problems: tuple[Problem, ...]
    config: bytes | None
    secrets: frozenset[str] = frozenset()
    #: ``content_digest`` of the files the load read (empty: not known).
    digest: bytes = b""


request_decoder: Final = msgspec.msgpack.Decoder(Request)
_built_decoder: Final = msgspec.msgpack.Decoder(Built)
encoder: Final = msgspec.msgpack.Encoder(enc_hook=enc_hook)
_config_decoder: Final = msgspec.msgpack.Decoder(Config, dec_hook=dec_hook)


def encode_config(config: Config) -> bytes:
    """``config`` as msgpack (value classes as their text)."""
    return encoder.encode(config)


def decode_config(data: bytes) -> Config:
    """The exact ``Config`` that ``encode_config`` encoded."""
    return _config_decoder.decode(data)


def rebuild(built: Built) -> Config | None:
    """The config a ``Built`` carries, exactly as the child loaded it (secrets remembered)."""
    if built.config is None:
        return None
    config = decode_config(built.config)
    remember_secrets(config, built.secrets)
    return config


@dataclass(frozen=True, slots=True)
class Candidate:
    """A built candidate: the config (``None`` if any problem is an error) and every problem,
    warnings included, sorted as ``validate`` prints them. ``digest``: the ``content_digest``
    of the files it was loaded from (``None``: not known), which tells a new edit from the
    same content read again (the aggregator reports a rejected candidate once)."""

    config: Config | None
    problems: tuple[Problem, ...]
    digest: bytes | None = None

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "error")

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity == "warning")


class BuildError(Exception):
    """The child could not build a candidate (it died, or did not answer in time)."""


def content_digest(files: Sequence[str]) -> bytes:
    """SHA-256 over the names and bytes of ``files`` (an unreadable one counts by its error).

    Read after the load: a file rewritten in between gives its new bytes' digest next to the
    old bytes' problems. The aggregator compares both, so such a race can only make it report
    a rejection twice, never hide a new one.
    """
    digest = hashlib.sha256()
    for name in files:
        digest.update(b"%d:%s" % (len(name), name.encode(errors="surrogateescape")))
        try:
            with open(name, "rb") as handle:
                digest.update(hashlib.file_digest(handle, "sha256").digest())
        except OSError as error:
            digest.update(b"error %d" % (error.errno or 0))
    return digest.digest()


def build_candidate(path: str, *, workers: int = 1) -> Built:
    """What the child does for one request (blocking; also usable in-process by tests)."""
    result = load(path, options=LoadOptions(workers=workers))
    problems = check(result, offline=False)
    digest = content_digest(result.files)
    failed = result.config is None or any(p.severity == "error" for p in problems)
    if failed or result.config is None:
        return Built(problems=problems, config=None, digest=digest)
    return Built(
        problems=problems,
        config=encode_config(result.config),
        secrets=secrets_of(result.config),
        digest=digest,
    )


class CandidateBuilder:
    """One child process that builds candidates on request (module docstring).

    ``command`` replaces the child's command line (tests); builds are serialised.
    """

    def __init__(self, command: Sequence[str] | None = None) -> None:
        self._command = (
            list(command)
            if command is not None
            else [sys.executable, "-m", "a3s_gateway.providers.child"]
        )
        self._process: trio.Process | None = None
        self._buffer = bytearray()
        self._lock = trio.Lock()
        #: Children started so far (for tests and logs).
        self.started = 0

    @property
    def pid(self) -> int | None:
        """The current child's pid, if one is running."""
        process = self._process
        return process.pid if process is not None and process.returncode is None else None

    async def start(self) -> None:
        """Start the child now (a warm child makes the first reload as fast as the next)."""
        async with self._lock:
            await self._ensure()

    async def build(self, path: str, *, workers: int = 1) -> Candidate:
        """Load and check ``path`` in the child. Raises ``BuildError``."""
        async with self._lock:
            try:
                with trio.fail_after(BUILD_TIMEOUT):
                    built = await self._ask(Request(path=path, workers=workers))
            except trio.TooSlowError:
                await self._discard()
                raise BuildError(f"the config build did not finish in {BUILD_TIMEOUT:g}s") from None
            except BuildError:
                await self._discard()
                raise
        return Candidate(rebuild(built), built.problems, built.digest or None)

    async def aclose(self) -> None:
        """Stop the child (end of its stdin, then a kill after a grace). Idempotent; safe in
        a cancelled scope, and while a build runs (that build fails with ``BuildError``)."""
        await self._discard()

    async def _ensure(self) -> trio.Process:
        process = self._process
        if process is not None and process.returncode is None:
            return process
        self._buffer.clear()
        process = await trio.lowlevel.open_process(
            self._command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # the child's own errors reach our stderr
        )
        self._process = process
        self.started += 1
        return process

    async def _ask(self, request: Request) -> Built:
        process = await self._ensure()
        assert process.stdin is not None
        assert process.stdout is not None
        payload = encoder.encode(request)
        try:
            await process.stdin.send_all(HEADER.pack(len(payload)) + payload)
            header = await self._read(process.stdout, HEADER.size)
            (length,) = HEADER.unpack(header)
            data = await self._read(process.stdout, length)
        except (trio.BrokenResourceError, trio.ClosedResourceError) as error:
            raise BuildError(f"the config build process failed: {error}") from error
        try:
            return _built_decoder.decode(data)
        except msgspec.DecodeError as error:
            raise BuildError(f"the config build process answered garbage: {error}") from error

    async def _read(self, stream: trio.abc.ReceiveStream, size: int) -> bytes:
        buffer = self._buffer
        while len(buffer) < size:
            chunk = await stream.receive_some(_READ_SIZE)
            if not chunk:
                raise BuildError("the config build process exited")
            buffer += chunk
        taken = bytes(buffer[:size])
        del buffer[:size]
        return taken

    async def _discard(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        with trio.CancelScope(shield=True):
            if process.stdin is not None:
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await process.stdin.aclose()
            with trio.move_on_after(_EXIT_GRACE):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()
            if process.stdout is not None:
                await process.stdout.aclose()
