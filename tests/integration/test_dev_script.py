"""``./dev`` (issue #13): it lists the recipes, runs the gateway in the caller's directory with
signals reaching it, and sets ``.venv`` up only as far as a recipe needs.

Two kinds of test. The real script on the real ``.venv`` runs with ``A3S_DEV_NO_SETUP=1``, so it
never installs anything or touches the network (in CI ``./dev check`` has set ``.venv`` up
before the suite runs; elsewhere a ``.venv`` not set up by ``./dev`` skips these tests). The
set-up logic itself runs hermetically: a copy of the script in a scratch "repository" whose
``.venv/bin/python``, ``.venv/bin/just`` and Debian-package script are fakes that log how they
were called.

Every subprocess is bounded (``timeout``, ``fail_after``) and killed on the way out.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import trio

from tests.support.cli import FIXTURES, ROOT, Completed, cli_env

pytestmark = pytest.mark.integration

DEV = ROOT / "dev"
#: ./dev's exit status when A3S_DEV_NO_SETUP=1 and .venv is not set up far enough.
NOT_SET_UP = 75
QUICKSTART = FIXTURES / "quickstart.hcl"


def no_setup_env() -> dict[str, str]:
    return cli_env({"A3S_DEV_NO_SETUP": "1"})


def not_set_up(stderr: str) -> None:
    message = f"./dev would set .venv up first: {stderr.strip()}"
    if os.environ.get("CI") == "true":  # ./dev check made it: a skip would hide a bug
        pytest.fail(message)
    pytest.skip(message)


def run_dev(*args: str, cwd: Path) -> Completed:
    done = subprocess.run(
        [str(DEV), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=no_setup_env(),
        cwd=cwd,
        timeout=60,
        check=False,
    )
    if done.returncode == NOT_SET_UP:
        not_set_up(done.stderr)
    return Completed(done.returncode, done.stdout, done.stderr)


# -- the real script ------------------------------------------------------------------------


def test_dev_alone_lists_the_recipes(tmp_path: Path) -> None:
    done = run_dev(cwd=tmp_path)  # from anywhere: just finds its justfile and itself
    assert done.code == 0, done.stderr
    assert done.stdout.startswith("Available recipes:")
    recipes = {line.split()[0] for line in done.stdout.splitlines()[1:] if line.strip()}
    assert {"check", "demo", "lint", "test", "type", "validate"} <= recipes


def test_validate_reads_a_config_relative_to_the_callers_directory(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    shutil.copy(QUICKSTART, tmp_path / "sub" / "gw.hcl")
    done = run_dev("validate", "sub/gw.hcl", cwd=tmp_path)
    assert done.code == 0, done.stderr
    assert done.stdout.startswith("sub/gw.hcl: configuration is valid (0 warning(s))\n")
    # ...and not relative to the repository: this path exists only there.
    relative_to_repo = str(QUICKSTART.relative_to(ROOT))
    done = run_dev("validate", relative_to_repo, cwd=tmp_path)
    assert done.code == 1
    assert relative_to_repo in done.stderr


async def test_sigint_to_a_backgrounded_dev_demo_stops_it(tmp_path: Path) -> None:
    """The issue's ``./dev demo &`` then ``kill -INT $!``: ``$!`` is the gateway itself (no
    just or shell between), a background job's inherited SIG_IGN does not hide SIGINT from it,
    and it drains and exits 0 at once (no request is open)."""
    script = '"$0" demo --port 0 & echo "pid=$!"; wait "$!"'
    errors_path = tmp_path / "stderr"
    with errors_path.open("wb") as errors:
        shell = await trio.lowlevel.open_process(
            ["bash", "-c", script, str(DEV)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=errors,
            env=no_setup_env(),
            cwd=tmp_path,
            start_new_session=True,  # its own process group: killed whole on the way out
        )
    errors_text = trio.Path(errors_path).read_text
    try:
        printed = await read_until(shell, b"/ws\n")
        if "/ws\n" not in printed:
            with trio.fail_after(10):
                code = await shell.wait()
            assert code == NOT_SET_UP, await errors_text()
            not_set_up(await errors_text())
        pid = int(printed.split("\n", 1)[0].removeprefix("pid="))
        command = (await trio.Path(f"/proc/{pid}/cmdline").read_bytes()).split(b"\0")
        assert command[1:6] == [b"-P", b"-m", b"a3s_gateway", b"demo", b"--port"], command
        os.kill(pid, signal.SIGINT)
        with trio.fail_after(10):
            code = await shell.wait()
        assert code == 0, await errors_text()
        assert "signal SIGINT: draining" in await errors_text()
    finally:
        if shell.returncode is None:  # (not reaped: the group is still the shell's)
            # The shell, and whatever ./dev left running under it (the gateway, or a just).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(shell.pid, signal.SIGKILL)
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                await shell.wait()


async def read_until(process: trio.Process, marker: bytes) -> str:
    """Stdout up to ``marker``, or all of it if the process ends first (bounded)."""
    assert process.stdout is not None
    received = b""
    with trio.fail_after(30):
        while marker not in received:
            chunk = await process.stdout.receive_some(65536)
            if not chunk:
                break
            received += chunk
    return received.decode()


# -- the set-up logic, hermetically ---------------------------------------------------------

FAKE_PYTHON = """#!/usr/bin/env bash
echo "python $*" >> "$(dirname "$0")/../../calls.log"
"""
FAKE_JUST = """#!/usr/bin/env bash
echo "just $* (in $PWD)" >> "$(dirname "$0")/../../calls.log"
"""
FAKE_DEBIAN = """#!/usr/bin/env bash
echo "debian packages" >> "$(dirname "$0")/../calls.log"
"""
INSTALL = "python -m pip install --quiet --disable-pip-version-check"


class FakeRepo:
    """``dev`` and ``pyproject.toml`` copied into ``root``, with logging fakes for the tools."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / ".venv" / "bin").mkdir(parents=True)
        (root / "scripts").mkdir()
        shutil.copy(DEV, root / "dev")
        shutil.copy(ROOT / "pyproject.toml", root / "pyproject.toml")
        for path, text in (
            (".venv/bin/python", FAKE_PYTHON),
            (".venv/bin/just", FAKE_JUST),
            ("scripts/install-debian-packages.sh", FAKE_DEBIAN),
        ):
            (root / path).write_text(text)
            (root / path).chmod(0o755)
        self.log = root / "calls.log"

    def run(self, *args: str, env: dict[str, str] | None = None) -> list[str]:
        """Run ``dev ARGS`` from a directory outside the repository; the calls it made."""
        self.log.write_text("")
        done = subprocess.run(
            [str(self.root / "dev"), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=cli_env(env, drop=("A3S_DEV_NO_SETUP",)),
            cwd=self.root.parent,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return self.log.read_text().splitlines()

    def stamps(self) -> list[str]:
        return sorted(path.name.rsplit("-", 1)[0] for path in (self.root / ".venv").glob(".in*"))


@pytest.fixture
def repo(tmp_path: Path) -> FakeRepo:
    return FakeRepo(tmp_path / "repo")


def test_each_recipe_installs_only_its_level_and_a_higher_level_satisfies_a_lower(
    repo: FakeRepo,
) -> None:
    # The demo: the runtime dependencies only, with the pip there is (no upgrade, no groups),
    # no Debian packages; then the gateway in the caller's directory.
    assert repo.run("demo", "--port", "0") == [
        f"{INSTALL} -e .[demo]",
        "python -P -m a3s_gateway demo --port 0",
    ]
    assert repo.stamps() == [".installed-runtime"]
    assert repo.run("validate", "x.hcl") == ["python -P -m a3s_gateway validate x.hcl"]
    # Lint: the dev group (pip >= 25.1 for --group), then just in the repository.
    assert repo.run("lint") == [
        f"{INSTALL} --upgrade pip>=25.1",
        f"{INSTALL} -e .[demo] --group dev",
        f"just lint (in {repo.root})",
    ]
    assert repo.stamps() == [".installed-dev"]
    # Tests need the Debian packages (checked every time); dev satisfies the demo.
    assert repo.run("test", "-k", "x") == ["debian packages", f"just test -k x (in {repo.root})"]
    assert repo.run("run", "gw.hcl") == ["python -P -m a3s_gateway run gw.hcl"]
    # The benchmark adds its group; bench then satisfies dev and runtime.
    assert repo.run("bench", "--quick") == [
        f"{INSTALL} --upgrade pip>=25.1",
        f"{INSTALL} -e .[demo] --group dev --group bench",
        "debian packages",
        f"just bench --quick (in {repo.root})",
    ]
    assert repo.stamps() == [".installed-bench"]
    assert repo.run() == [f"just  (in {repo.root})"]
    assert repo.run("check") == ["debian packages", f"just check (in {repo.root})"]
    assert repo.run("demo") == ["python -P -m a3s_gateway demo"]


def test_a_changed_pyproject_sets_up_again(repo: FakeRepo) -> None:
    repo.run("lint")
    with (repo.root / "pyproject.toml").open("a") as pyproject:
        pyproject.write("\n# changed\n")
    assert repo.run("demo")[0] == f"{INSTALL} -e .[demo]"
    assert repo.stamps() == [".installed-runtime"]


def test_run_and_validate_default_to_the_example_config(repo: FakeRepo) -> None:
    repo.run("demo")
    example = repo.root / "examples" / "gateway.hcl"
    assert repo.run("validate") == [f"python -P -m a3s_gateway validate {example}"]


def test_no_setup_refuses_to_install(repo: FakeRepo) -> None:
    repo.run("demo")
    repo.log.write_text("")
    done = subprocess.run(
        [str(repo.root / "dev"), "lint"],
        capture_output=True,
        text=True,
        env=cli_env({"A3S_DEV_NO_SETUP": "1"}),
        cwd=repo.root,
        timeout=60,
        check=False,
    )
    assert done.returncode == NOT_SET_UP
    assert "not set up for 'dev'" in done.stderr
    assert repo.log.read_text() == ""  # nothing ran
