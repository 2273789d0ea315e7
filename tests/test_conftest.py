"""The suite-wide guards of tests/conftest.py: an async test is time-limited (by the suite's
limit or its ``time_limit`` marker; an async property test per example), and logging set up by
one test (the CLI in-process, ``applog.install``) is gone in the next: the ``a3s_gateway``
logger's handlers, level and ``propagate`` come back after each test.

The two logging tests run in file order (pytest's default): the first leaves the application
log installed on purpose, the second sees the logger as Python made it.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from a3s_gateway import cli
from a3s_gateway.observability import applog
from a3s_gateway.observability.applog import LoggerState
from tests.conftest import TEST_TIME_LIMIT

#: The ``a3s_gateway`` logger as the logging module makes it: no handler, no level, propagating.
PRISTINE = LoggerState(handlers=(), level=logging.NOTSET, propagate=True)


@settings(max_examples=3, deadline=None)
@given(st.integers())
async def test_each_example_of_an_async_property_runs_under_the_time_limit(value: int) -> None:
    deadline = trio.current_effective_deadline()
    assert deadline < math.inf
    assert deadline - trio.current_time() <= TEST_TIME_LIMIT


async def test_an_unmarked_async_test_gets_the_suites_limit() -> None:
    left = trio.current_effective_deadline() - trio.current_time()
    assert TEST_TIME_LIMIT - 5.0 < left <= TEST_TIME_LIMIT


@pytest.mark.time_limit(5.0)
async def test_the_time_limit_marker_sets_the_tests_own_limit() -> None:
    assert 0.0 < trio.current_effective_deadline() - trio.current_time() <= 5.0


def test_install_returns_what_restores_the_logger_as_it_was() -> None:
    before = LoggerState.now()
    replaced = applog.install("debug", "json")
    assert replaced == before
    logger = logging.getLogger("a3s_gateway")
    assert (logger.level, logger.propagate, len(logger.handlers)) == (logging.DEBUG, False, 1)
    replaced.restore()
    assert LoggerState.now() == before


def test_the_cli_run_in_process_leaves_the_logger_as_it_found_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = LoggerState.now()
    # `run` installs the application log first, then fails on the missing file.
    assert cli.main(["run", "--log-level", "debug", str(tmp_path / "missing.hcl")]) == 1
    assert "missing.hcl" in capsys.readouterr().err
    assert LoggerState.now() == before


def test_a_test_that_installs_the_application_log_and_leaves_it() -> None:
    applog.install("warning", "text")
    assert LoggerState.now() != PRISTINE  # left for the autouse fixture to undo


def test_the_next_test_sees_the_logger_pristine(caplog: pytest.LogCaptureFixture) -> None:
    assert LoggerState.now() == PRISTINE
    logging.getLogger("a3s_gateway.app").warning("reaches the root logger")
    assert [r.getMessage() for r in caplog.records] == ["reaches the root logger"]
