"""The application log's formats (SPEC §9.3): a worker process's lines name the worker, in text
(a last field ``worker=<n>``) and in JSON (a ``worker`` field); other lines do not. (What
``install`` changes on the ``a3s_gateway`` logger is undone after each test: tests/conftest.py.)"""

from __future__ import annotations

import json
import logging

import pytest

from a3s_gateway.observability import applog


def logged(capsys: pytest.CaptureFixture[str]) -> list[str]:
    logging.getLogger("a3s_gateway.app").info("listening entrypoint=%s", "web")
    return capsys.readouterr().err.splitlines()


def test_a_workers_text_lines_name_it_in_a_last_field(capsys: pytest.CaptureFixture[str]) -> None:
    applog.install("info", "text", worker=1)
    (line,) = logged(capsys)
    assert line.endswith(" INFO    a3s_gateway.app: listening entrypoint=web worker=1")


def test_a_traceback_follows_the_workers_line(capsys: pytest.CaptureFixture[str]) -> None:
    applog.install("info", "text", worker=0)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("a3s_gateway.worker").exception("crashed")
    first, *rest = capsys.readouterr().err.splitlines()
    assert first.endswith(" ERROR   a3s_gateway.worker: crashed worker=0")
    assert rest[-1] == "ValueError: boom"


def test_other_text_lines_keep_the_plain_format(capsys: pytest.CaptureFixture[str]) -> None:
    applog.install("info", "text")
    (line,) = logged(capsys)
    assert line.endswith(" INFO    a3s_gateway.app: listening entrypoint=web")
    assert "worker" not in line


@pytest.mark.parametrize("worker", [0, 3, None])
def test_a_workers_json_lines_carry_its_index(
    capsys: pytest.CaptureFixture[str], worker: int | None
) -> None:
    applog.install("info", "json", worker=worker)
    (line,) = logged(capsys)
    entry = json.loads(line)
    assert ("worker" in entry) == (worker is not None)
    assert entry.get("worker") == worker
    assert (entry["level"], entry["logger"]) == ("info", "a3s_gateway.app")
    assert entry["message"] == "listening entrypoint=web"
