"""The config loading pipeline without its input (SPEC §3.1, §3.5): parsed files → merge →
interpolate → schema → semantic checks → settings not available yet, collecting every problem.

Ring 0: it is handed the parsed main file, the parsed conf.d files and the environment as a
mapping; ``config/load.py`` (Ring 1) reads the files and ``os.environ`` and calls ``assemble``.
No trio, sockets, TLS, clock, files or logging. The environment checks of SPEC §3.1 step 6
(certificate files and keys) live in ``a3s_gateway.preflight``. Must not: raise for a bad config
(it returns problems), log secrets, or return a problem that quotes an interpolated value (they
all pass through ``LoadResult.redactor``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from a3s_gateway.config.availability import check_availability
from a3s_gateway.config.convert import convert_config
from a3s_gateway.config.interpolate import interpolate_tree
from a3s_gateway.config.problems import (
    Path,
    Problem,
    SourceMap,
    format_path,
    make_problem,
    sort_problems,
)
from a3s_gateway.config.redaction import Redactor, Spot
from a3s_gateway.config.schema import LABELLED_SECTIONS, remember_secrets
from a3s_gateway.config.semantic import SemanticContext, check_semantics

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from a3s_gateway.config.hcl import ParsedFile
    from a3s_gateway.config.interpolate import InterpolationResult
    from a3s_gateway.config.schema import Config

__all__ = ["MAIN_FILE_ONLY", "LoadOptions", "LoadResult", "assemble", "conf_d_directory"]

MAIN_FILE_ONLY: Final = frozenset(
    {
        "providers",
        "management",
        "observability",
        "shutdown_timeout_secs",
        "public_env",
        "http1_parser",
    }
)
#: A variable name that says its value is a secret: listing it in ``public_env`` is warned of.
_SECRET_NAME: Final = re.compile(r"SECRET|TOKEN|PASSWORD|PASSWD|KEY|CREDENTIAL", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class LoadResult:
    """What loading produced: the config if there was no error, and every problem found."""

    config: Config | None
    problems: tuple[Problem, ...]
    sources: SourceMap
    main_file: str
    files: tuple[str, ...]
    #: The converted config even when errors were found (offending parts removed), so that
    #: environment checks can still run and report alongside; ``None`` if nothing converted.
    partial: Config | None = None
    #: Hides the interpolated values (SPEC §14.4); ``problems`` went through it already, later
    #: problems about this config (``preflight``) must too.
    redactor: Redactor = field(default_factory=Redactor)

    @property
    def errors(self) -> tuple[Problem, ...]:
        """The problems of severity ``error``."""
        return tuple(p for p in self.problems if p.severity == "error")

    @property
    def warnings(self) -> tuple[Problem, ...]:
        """The problems of severity ``warning``."""
        return tuple(p for p in self.problems if p.severity == "warning")


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """Knobs that change which checks apply (SPEC §2.1, §3.15)."""

    workers: int = 1
    #: Refuse settings whose feature has not landed yet (``config/availability.py``). Only the
    #: tests of the schema and semantic rules of those features turn this off.
    refuse_unavailable: bool = True


def assemble(
    main_file: str,
    main: ParsedFile,
    env: Mapping[str, str],
    options: LoadOptions,
    *,
    conf_d: Sequence[tuple[str, ParsedFile]] = (),
    conf_d_problems: Sequence[Problem] = (),
) -> LoadResult:
    """The config of the parsed ``main`` file merged with the parsed ``conf_d`` files (path,
    parsed; in merge order), interpolated from ``env``, converted and checked. The problems
    found while reading and parsing the conf.d files come as ``conf_d_problems``. Never raises
    for a bad config."""
    sources = SourceMap()
    sources.update(main.sources)
    problems = [*main.problems, *conf_d_problems]
    files = [main_file]
    data = dict(main.data)
    for file, parsed in conf_d:
        files.append(file)
        _merge(data, file, parsed, sources, problems)
    _refuse_provider_sources(data, sources, main_file, problems)
    # Names, never interpolated: "${X}" there is refused by the schema, not expanded.
    public_env = data.pop("public_env", None)
    public = _public_names(public_env, sources, main_file, problems)
    interpolated = interpolate_tree(data, env, public=public)
    for error_path, message in interpolated.errors:
        problems.append(make_problem("error", error_path, message, sources, default_file=main_file))
    tree = _without_nulls(interpolated.data)
    assert isinstance(tree, dict)
    if public_env is not None:
        tree["public_env"] = public_env
    converted = convert_config(
        tree,
        sources,
        default_file=main_file,
        whole=interpolated.whole,
        reported=frozenset(path for path, _ in interpolated.errors),
    )
    problems.extend(converted.problems)
    if converted.config is not None and main.ok:
        context = SemanticContext(
            sources=sources,
            default_file=main_file,
            broken=frozenset(converted.broken),
            workers=options.workers,
            admin_token_set=_admin_token_set(converted.config, env),
        )
        problems.extend(_semantic(converted.config, context, options, problems))
    redactor = _redactor(interpolated, frozenset(converted.coerced))
    # Redacted first: two problems that differ only in a secret are then reported once.
    ordered = sort_problems(list(redactor.problems(problems)))
    failed = not main.ok or any(p.severity == "error" for p in ordered)
    config = None if failed else converted.config
    if converted.config is not None:
        remember_secrets(converted.config, redactor.secrets)
    return LoadResult(config, ordered, sources, main_file, tuple(files), converted.config, redactor)


def _refuse_provider_sources(
    data: dict[str, object], sources: SourceMap, main_file: str, problems: list[Problem]
) -> None:
    """``provider_sources`` is the merge's (``providers/merge.py``), never a file's."""
    if data.pop("provider_sources", None) is not None:
        message = (
            'field "provider_sources" is set by the gateway\'s dynamic providers; a config '
            "file may not write it"
        )
        problems.append(
            make_problem("error", ("provider_sources",), message, sources, default_file=main_file)
        )


def _semantic(
    config: Config, context: SemanticContext, options: LoadOptions, earlier: list[Problem]
) -> list[Problem]:
    """The semantic (and, with ``refuse_unavailable``, availability) problems of ``config``."""
    # A field an earlier stage rejected was removed; what semantic checks then say about it
    # (e.g. "required") is an echo of that problem, not a new one.
    rejected = {p.path for p in earlier if p.severity == "error"}
    semantic = check_semantics(config, context)
    if options.refuse_unavailable:
        semantic += check_availability(config, context.sources, default_file=context.default_file)
    return [p for p in semantic if p.path not in rejected]


def _redactor(interpolated: InterpolationResult, coerced: frozenset[Path]) -> Redactor:
    """What hides the interpolated values (SPEC §14.4): every secret ``interpolate_tree``
    noted, except whole ``${VAR}`` strings that became a number or bool."""
    return Redactor(
        interpolated.secrets(besides=coerced),
        (
            Spot(format_path(item.path), item.shown)
            for item in interpolated.substituted
            if item.path not in coerced
        ),
    )


def _public_names(
    listed: object, sources: SourceMap, main_file: str, problems: list[Problem]
) -> frozenset[str]:
    """The names in ``public_env`` (the schema checks its shape), warning of any that looks
    like a secret's."""
    if not isinstance(listed, list | tuple):
        return frozenset()
    names = [name if isinstance(name, str) else "" for name in listed]
    for index, name in enumerate(names):
        if _SECRET_NAME.search(name):
            problems.append(
                make_problem(
                    "warning",
                    ("public_env", index),
                    f"{name} looks like the name of a secret; as it is listed here, its "
                    "value is shown in /config, logs and problems",
                    sources,
                    default_file=main_file,
                )
            )
    return frozenset(name for name in names if name)


def conf_d_directory(data: Mapping[str, object], env: Mapping[str, str]) -> str | None:
    """``providers.file.directory`` of the main file's ``data``, interpolated from ``env``;
    None when it is not set or cannot be resolved."""
    providers = data.get("providers")
    file_block = providers.get("file") if isinstance(providers, dict) else None
    directory = file_block.get("directory") if isinstance(file_block, dict) else None
    if not isinstance(directory, str) or not directory:
        return None
    resolved = interpolate_tree(directory, env)
    return resolved.data if isinstance(resolved.data, str) and not resolved.errors else None


def _merge(
    data: dict[str, object],
    file: str,
    parsed: ParsedFile,
    sources: SourceMap,
    problems: list[Problem],
) -> None:
    """Merge one conf.d file into the main data (SPEC §3.5)."""
    for key, value in parsed.data.items():
        if key in MAIN_FILE_ONLY:
            problems.append(
                make_problem(
                    "error",
                    (key,),
                    f'"{key}" is allowed only in the main config file',
                    parsed.sources,
                    default_file=file,
                )
            )
            continue
        if key not in LABELLED_SECTIONS or not isinstance(value, dict):
            data.setdefault(key, value)
            continue
        section = data.setdefault(key, {})
        assert isinstance(section, dict)
        for label, body in value.items():
            where: Path = (key, label)
            if label in section:
                first = sources.get(where)
                also = f" (also at {first.file}:{first.line})" if first is not None else ""
                problems.append(
                    make_problem(
                        "error",
                        where,
                        f'{key} "{label}" is defined twice{also}',
                        parsed.sources,
                        default_file=file,
                    )
                )
                continue
            section[label] = body
    sources.update(parsed.sources)


def _without_nulls(node: object) -> object:
    """``null`` means "use the default" (SPEC §3.2): drop null-valued keys, keep null items."""
    if isinstance(node, dict):
        return {k: _without_nulls(v) for k, v in node.items() if v is not None}
    if isinstance(node, list):
        return [_without_nulls(item) for item in node]
    return node


def _admin_token_set(config: Config, env: Mapping[str, str]) -> bool:
    management = config.management
    return management is not None and bool(env.get(management.auth_token_env))
