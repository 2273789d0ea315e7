"""Command line: argument parsing, problem output and exit codes only (SPEC §2.1–2.5).

Ring 2 (with ``app.py``): the only place that installs signal handlers and logging (the
logging ``run`` and ``demo`` install is undone when they return, for an in-process caller). Commands
delegate to ``config.load``, ``preflight`` and ``app.Gateway``. Errors on the command line are
one line on stderr (exit 2), never a traceback. A reader that stops early (``validate … | head
-1``, ``version | true``) is no error either: the rest of the output is dropped and the exit
code is the command's own. Nothing printed quotes an interpolated config value (SPEC §14.4):
problems come redacted from the loader, and the summary and start errors pass through the
load's ``redactor``.

Nurseries: ``run`` opens one nursery holding ``Gateway.serve``, the reload path
(``providers.Reloader.run``: the file watcher and debounced reloads, when
``providers.file.watch`` is true) and the signal watcher; a first SIGINT/SIGTERM asks the
gateway to drain, a second cancels the nursery at once (exit 128+n). SIGHUP and the watcher
share one reload function (``Reloader.reload_now``); a failed reload keeps the running config,
logs every problem and is recorded in ``health().last_reload``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import platform
import resource
import signal
import sys
from functools import partial
from importlib.metadata import version as package_version
from typing import TYPE_CHECKING, Final, NoReturn, Protocol, TextIO, TypeVar

import msgspec
import trio

from a3s_gateway.acme.board import ChallengeBoard
from a3s_gateway.acme.manager import acme_factory
from a3s_gateway.app import Gateway
from a3s_gateway.config.load import LoadOptions, load
from a3s_gateway.config.overrides import apply_listen_override
from a3s_gateway.config.summary import summary, summary_lines
from a3s_gateway.config.values import Address
from a3s_gateway.demo import Demo
from a3s_gateway.demo.run import DEFAULT_PORT
from a3s_gateway.errors import ConfigError, GatewayError
from a3s_gateway.observability import applog
from a3s_gateway.preflight import check
from a3s_gateway.providers import ProviderHub, Reloader
from a3s_gateway.supervisor.workers import run_supervisor
from a3s_gateway.version import __version__

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

    from a3s_gateway.config.problems import Problem
    from a3s_gateway.config.schema import Config

PROG: Final = "a3s-gateway"
EXIT_OK: Final = 0
EXIT_CONFIG: Final = 1
EXIT_USAGE: Final = 2
EXIT_START: Final = 3
log: Final = logging.getLogger("a3s_gateway.cli")
_E = TypeVar("_E", bound=BaseException)


class _Startable(Protocol):
    """A ``serve`` function for ``nursery.start``: ``Gateway.serve``, ``Demo.serve``."""

    def __call__(self, *, task_status: trio.TaskStatus[object]) -> Awaitable[object]: ...


class UsageError(Exception):
    """A command-line mistake: printed as one line, exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every command (SPEC §2.1)."""
    parser = _Parser(prog=PROG, description="API gateway and reverse proxy on trio.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)
    run = commands.add_parser("run", help="serve traffic with a config file")
    _config_arguments(run)
    run.add_argument("--log-level", default=None, help="debug, info, warning or error")
    run.add_argument("--log-format", choices=("text", "json"), default="text")
    run.add_argument("--workers", type=_workers, default=1, help="worker processes (0 = CPUs)")
    run.add_argument("--listen", type=_address, default=None, help="override entrypoint web")
    validate = commands.add_parser("validate", help="check a config file and print problems")
    _config_arguments(validate)
    validate.add_argument("--offline", action="store_true", help="skip file/certificate checks")
    validate.add_argument("--format", choices=("text", "json"), default="text")
    commands.add_parser("version", help="print versions")
    demo = commands.add_parser("demo", help="start demo backends and a gateway in front of them")
    demo.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help="gateway port (0 = a free one)"
    )
    return parser


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", nargs="?", default=None, help="the HCL config file")
    parser.add_argument(
        "-c", "--config", dest="config_option", default=None, help=argparse.SUPPRESS
    )


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'"{text}" is not a whole number') from None
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 (one per CPU) or more")
    return value


def _port(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) > 65535:
        raise argparse.ArgumentTypeError(f'"{text}" is not a port number (0-65535)')
    return int(text)


def _address(text: str) -> str:
    try:
        Address(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def _config_path(args: argparse.Namespace) -> str:
    positional: str | None = args.config
    option: str | None = args.config_option
    if positional is not None and option is not None:
        raise UsageError("give the config file either as an argument or with --config, not both")
    path = positional if positional is not None else option
    if path is None:
        raise UsageError("a config file is required, e.g. a3s-gateway run gateway.hcl")
    return path


def _normalise_argv(argv: Sequence[str]) -> list[str]:
    """A3S compatibility: ``a3s-gateway --config FILE …`` (no command) means ``run``."""
    args = list(argv)
    if args and args[0].startswith("-") and args[0] not in ("-h", "--help", "--version"):
        return ["run", *args]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m a3s_gateway`` and the ``a3s-gateway`` script."""
    try:
        return _command(argv)
    finally:
        # Also after argparse's --help (SystemExit): flushed here, a closed pipe is dropped
        # quietly instead of failing again in the interpreter's final flush.
        for stream in (sys.stdout, sys.stderr):
            _flush(stream)


def _command(argv: Sequence[str] | None) -> int:
    try:
        args = build_parser().parse_args(_normalise_argv(sys.argv[1:] if argv is None else argv))
        if args.version or args.command == "version":
            return _version()
        if args.command == "validate":
            return _validate(_config_path(args), offline=args.offline, output=args.format)
        if args.command == "run":
            return _run(args)
        if args.command == "demo":
            return _demo(args.port)
        build_parser().print_help(sys.stderr)
        return EXIT_USAGE
    except UsageError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_USAGE


def _say(text: str, stream: TextIO | None = None) -> None:
    """Print ``text`` (a line) to ``stream`` (default stdout). A reader that went away
    (``| head -1``) is not an error: that stream's output is dropped from then on."""
    stream = stream or sys.stdout
    try:
        print(text, file=stream)
    except BrokenPipeError:
        _drop(stream)


def _flush(stream: TextIO) -> None:
    try:
        stream.flush()
    except BrokenPipeError:
        _drop(stream)


def _drop(stream: TextIO) -> None:
    """Point ``stream``'s file descriptor at /dev/null, so that what is still buffered and
    everything written later (the interpreter flushes at exit) goes nowhere, without a
    second BrokenPipeError (Python's docs, "Note on SIGPIPE")."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):  # not a real file (pytest's capture): nothing to redirect
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _version() -> int:
    _say(f"{PROG} {__version__}")
    parts = [f"python {platform.python_version()}"]
    parts += [f"{name} {package_version(name)}" for name in ("trio", "h11", "h2", "wsproto")]
    _say(", ".join(parts))
    return EXIT_OK


def _print_problems(problems: Sequence[Problem]) -> None:
    for problem in problems:
        _say(problem.format(), sys.stderr)


def _validate(path: str, *, offline: bool, output: str) -> int:
    result = load(path)
    # The problems come redacted; the summary names addresses and files (SPEC §14.4).
    problems, hidden = check(result, offline=offline), result.redactor
    valid = not any(p.severity == "error" for p in problems)
    if output == "json":
        document = {
            "valid": valid,
            "problems": [msgspec.to_builtins(p) for p in problems],
            "summary": (
                hidden.tree(summary(result.config)) if valid and result.config is not None else {}
            ),
        }
        _say(msgspec.json.encode(document).decode())
        return EXIT_OK if valid else EXIT_CONFIG
    _print_problems(problems)
    if not valid:
        errors = sum(p.severity == "error" for p in problems)
        _say(f"{path}: {errors} error(s), {len(problems) - errors} warning(s)", sys.stderr)
        return EXIT_CONFIG
    assert result.config is not None
    _say(f"{path}: configuration is valid ({len(problems)} warning(s))")
    for line in summary_lines(result.config):
        _say(hidden.text(line))
    return EXIT_OK


def _log_level(option: str | None) -> str:
    level = option if option is not None else os.environ.get("A3S_LOG_LEVEL", "info")
    level = level.lower()
    if level not in applog.LEVELS:
        raise UsageError(f'invalid log level "{level}": use debug, info, warning or error')
    return level


def _run(args: argparse.Namespace) -> int:
    path = _config_path(args)
    replaced = applog.install(_log_level(args.log_level), args.log_format)
    try:
        return _run_logged(args, path)
    finally:
        replaced.restore()  # an in-process caller gets its logging back


def _run_logged(args: argparse.Namespace, path: str) -> int:
    result = load(path, options=LoadOptions(workers=args.workers or os.cpu_count() or 1))
    problems = check(result, offline=False)
    if any(p.severity == "error" for p in problems) or result.config is None:
        _print_problems(problems)
        return EXIT_CONFIG
    for problem in problems:
        log.warning("%s", problem.format())
    _raise_file_limit()
    workers = args.workers or os.cpu_count() or 1
    if workers > 1:
        return run_supervisor(
            path,
            workers=workers,
            listen=args.listen,
            log_level=_log_level(args.log_level),
            log_format=args.log_format,
            config=result.config,  # generation 1 is exactly what was checked above
        )
    # Dynamic providers: the first generation already leaves pending references out, and has
    # the stored ACME certificates (the providers are set up before the first merge).
    challenges = ChallengeBoard()
    hub = ProviderHub(acme=acme_factory(challenges))
    hub.apply(result.config)
    config = hub.merge(result.config, default_file=path).config
    try:
        gateway = Gateway(config, listen_override=args.listen, challenges=challenges)
        return trio.run(_serve_until_signalled, gateway, path, args.listen, hub)
    except GatewayError as error:  # StartError included: a bind failure names the address
        shown = result.redactor.text(str(error), message=True)
        print(f"{PROG}: error: {shown}", file=sys.stderr)
        return EXIT_START


def _raise_file_limit() -> None:
    """SPEC §2.6: raise the RLIMIT_NOFILE soft limit to the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


async def _serve_until_signalled(
    gateway: Gateway, path: str, listen: str | None, hub: ProviderHub | None = None
) -> int:
    """Serve with the file provider; drain on the first SIGINT/SIGTERM, exit at once on the
    second, reload on SIGHUP (the same path as a file change, but never skipped as unchanged)."""
    prepare: Callable[[Config], Config] | None = None
    if listen is not None:
        prepare = partial(apply_listen_override, address=Address(listen))
    reloader = Reloader(gateway, path, prepare=prepare, hub=hub)
    gateway.attach_reloader(reloader)

    async def on_sighup() -> None:
        # After logrotate the access log goes on in a new file, whatever the config says.
        gateway.reopen_access_log()
        await reloader.reload_now(force=True)

    return await _until_signalled(
        gateway.serve, gateway.shutdown, on_sighup, background=reloader.run
    )


async def _until_signalled(
    serve: _Startable,
    shutdown: Callable[[], Awaitable[object]],
    reload: Callable[[], Awaitable[object]],
    *,
    background: _Startable | None = None,
) -> int:
    """Run ``serve`` (a ``nursery.start``-able function) until it returns; the first
    SIGINT/SIGTERM calls ``shutdown``, a second cancels at once (128+n), SIGHUP calls ``reload``.
    ``background`` (also ``start``-able) runs from when ``serve`` has started until it returns.

    A ``GatewayError`` from starting ``serve`` is raised as it is (not in an exception group).
    """
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        start_error: list[GatewayError] = []
        exit_code: list[int] = []
        async with trio.open_nursery() as nursery:

            async def serve_then_stop(
                task_status: trio.TaskStatus[object] = trio.TASK_STATUS_IGNORED,
            ) -> None:
                await serve(task_status=task_status)
                nursery.cancel_scope.cancel()

            try:
                await nursery.start(serve_then_stop)
            except GatewayError as error:
                start_error.append(error)
            else:
                if background is not None:
                    await nursery.start(background)
                exit_code.append(await _signal_loop(signals, nursery, shutdown, reload))
        if start_error:
            raise start_error[0]
    return exit_code[0] if exit_code else EXIT_OK


async def _signal_loop(
    signals: AsyncIterator[int],
    nursery: trio.Nursery,
    shutdown: Callable[[], Awaitable[object]],
    reload: Callable[[], Awaitable[object]],
) -> int:
    """React to signals until the nursery is cancelled; returns the exit code (SPEC §2.4)."""
    draining = False
    async for signum in signals:
        if signum == signal.SIGHUP:
            # In the background: a SIGTERM during a reload is handled at once.
            nursery.start_soon(reload)
        elif draining:
            log.warning("second signal %s: stopping now", signal.Signals(signum).name)
            nursery.cancel_scope.cancel()
            return 128 + signum
        else:
            draining = True
            log.info("signal %s: draining", signal.Signals(signum).name)
            nursery.start_soon(shutdown)
    return EXIT_OK


def _demo(port: int) -> int:
    """``demo``: the backends and the gateway on the packaged demo.hcl, until a signal."""
    replaced = applog.install(_log_level(None), "text")
    try:
        demo = Demo(port)
        return trio.run(_until_signalled, demo.serve, demo.shutdown, demo.reload)
    except (GatewayError, BaseExceptionGroup) as error:
        # Start errors come out of the demo's nurseries wrapped in exception groups.
        config_error = _find(error, ConfigError)
        if config_error is not None:
            _print_problems(config_error.problems)
            return EXIT_CONFIG
        start_error = _find(error, GatewayError)
        if start_error is None:
            raise
        print(f"{PROG}: error: {start_error}", file=sys.stderr)
        return EXIT_START
    finally:
        replaced.restore()  # an in-process caller gets its logging back


def _find(error: BaseException, kind: type[_E]) -> _E | None:
    """``error`` itself or the first ``kind`` inside it (exception groups, depth first)."""
    if isinstance(error, kind):
        return error
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            found = _find(inner, kind)
            if found is not None:
                return found
    return None
