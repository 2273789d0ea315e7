"""Loading a config from its files and the environment (SPEC §3.1, §3.5): read the main file,
find and read the conf.d files, take ``os.environ`` unless an environment is given, and hand
all of it to the pure pipeline (``config/assemble.py``).

Ring 1 (the shell's reading; no trio, sockets, TLS or clock): the one module under
``config/`` that opens files and reads the environment, so the rest of the package stays
Ring 0. No Ring 0 module imports it; the facade (``load_config``), the CLI, ``preflight``, the
reload candidate, the supervisor and the demo do. ``load_text`` and ``load_config_text`` are
here too, because they default the environment to ``os.environ``. The environment checks of
SPEC §3.1 step 6 (certificate files and keys) live in ``a3s_gateway.preflight`` because they
need ``ssl``. Must not: raise for a bad config (it returns problems; ``load_config`` turns them
into one ``ConfigError``), or log.
"""

from __future__ import annotations

import os
from pathlib import Path as FsPath
from typing import TYPE_CHECKING, Final

from a3s_gateway.config.assemble import LoadOptions, LoadResult, assemble, conf_d_directory
from a3s_gateway.config.hcl import ParsedFile, parse_hcl
from a3s_gateway.config.problems import Problem, SourceMap
from a3s_gateway.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Mapping

    from a3s_gateway.config.schema import Config

__all__ = [
    "MAX_FILE_BYTES",
    "LoadOptions",
    "LoadResult",
    "conf_d_files",
    "load",
    "load_config",
    "load_config_text",
    "load_text",
]

MAX_FILE_BYTES: Final = 16 * 1024 * 1024
_DEFAULT_OPTIONS: Final = LoadOptions()


def load(
    path: str | os.PathLike[str],
    *,
    env: Mapping[str, str] | None = None,
    options: LoadOptions = _DEFAULT_OPTIONS,
) -> LoadResult:
    """Load a config file and its conf.d directory (``env``: ``os.environ`` if not given).
    Never raises for a bad config."""
    main_file = os.fspath(path)
    text, problem = _read(main_file)
    if text is None:
        assert problem is not None
        return LoadResult(None, (problem,), SourceMap(), main_file, (main_file,))
    environment = os.environ if env is None else env
    main = parse_hcl(text, filename=main_file)
    conf_d, conf_d_problems = _conf_d(main_file, conf_d_directory(main.data, environment))
    return assemble(
        main_file,
        main,
        environment,
        options,
        conf_d=conf_d,
        conf_d_problems=conf_d_problems,
    )


def load_text(
    text: str,
    *,
    filename: str = "<string>",
    env: Mapping[str, str] | None = None,
    options: LoadOptions = _DEFAULT_OPTIONS,
) -> LoadResult:
    """Load a config from a string (no conf.d; ``env``: ``os.environ`` if not given). Never
    raises for a bad config."""
    environment = os.environ if env is None else env
    return assemble(filename, parse_hcl(text, filename=filename), environment, options)


def load_config(path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None) -> Config:
    """Parse, merge conf.d, interpolate, validate (SPEC §2.7). Raises ``ConfigError``.

    Performs no environment checks (certificate files are checked when the gateway starts).
    Blocking; may be called from a thread.
    """
    return _config_or_raise(load(path, env=env))


def load_config_text(
    text: str, *, filename: str = "<string>", env: Mapping[str, str] | None = None
) -> Config:
    """``load_config`` for a string. Raises ``ConfigError``."""
    return _config_or_raise(load_text(text, filename=filename, env=env))


def _config_or_raise(result: LoadResult) -> Config:
    if result.config is None:
        raise ConfigError(result.problems)
    return result.config


def _read(file: str) -> tuple[str | None, Problem | None]:
    def fail(message: str) -> tuple[None, Problem]:
        return None, Problem(
            severity="error", file=file, line=None, column=None, path="", message=message
        )

    try:
        with open(file, "rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        return fail("config file not found")
    except IsADirectoryError:
        return fail("config path is a directory, not a file")
    except OSError as error:
        return fail(f"cannot read config file: {error.strerror or error}")
    if len(raw) > MAX_FILE_BYTES:
        return fail("config file is larger than 16 MiB")
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as error:
        return fail(f"config file is not valid UTF-8 (byte {error.start})")


def _conf_d(
    main_file: str, directory: str | None
) -> tuple[list[tuple[str, ParsedFile]], list[Problem]]:
    """Every ``*.hcl`` file under ``providers.file.directory`` (SPEC §3.5), parsed, and the
    problems met reading and parsing them, in file order."""
    if directory is None:
        return [], []
    root = FsPath(main_file).parent / directory
    if not root.is_dir():
        missing = Problem(
            severity="warning",
            file=main_file,
            line=None,
            column=None,
            path="providers.file.directory",
            message=f'conf.d directory "{directory}" does not exist; '
            "the file provider watches for it to appear",
        )
        return [], [missing]
    parsed: list[tuple[str, ParsedFile]] = []
    problems: list[Problem] = []
    for file in conf_d_files(root):
        text, problem = _read(os.fspath(file))
        if text is None:
            assert problem is not None
            problems.append(problem)
            continue
        result = parse_hcl(text, filename=os.fspath(file))
        problems.extend(result.problems)
        parsed.append((os.fspath(file), result))
    return parsed, problems


def conf_d_files(root: FsPath) -> list[FsPath]:
    """Regular ``*.hcl`` files under ``root``, recursively, in byte-wise order of their path
    relative to ``root``; names starting with ``.`` are skipped; symlinks are followed."""
    found: list[tuple[bytes, FsPath]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            file = FsPath(dirpath) / name
            if name.startswith(".") or not name.endswith(".hcl") or not file.is_file():
                continue
            found.append((os.fsencode(file.relative_to(root)), file))
    return [file for _, file in sorted(found)]
