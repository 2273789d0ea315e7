"""The real ``kubectl`` against the fake Kubernetes API server (``tests/support/fake_kube.py``).

Test support: ``kubectl_binary`` finds kubectl (a missing one fails the test under ``CI=true``
and skips it otherwise, like the other real peers); ``Kubectl`` runs it with a kubeconfig the
fake wrote (token or client certificate) and a private ``HOME`` (so its discovery and OpenAPI
caches stay in the test's directory): ``run`` under trio, ``run_blocking`` from a plain thread
(for the in-thread server), and ``open_watch`` for a long-running ``kubectl get --watch``.
``parse_json_stream`` splits the concatenated JSON documents kubectl prints while watching.

Every run is bounded by ``KUBECTL_WAIT`` and kubectl is killed when the bound or the caller's
cancel scope ends it; ``open_watch`` kills its process at exit.

Must not: read or write the user's ``~/.kube`` (HOME is the test's directory); pass the
caller's environment through (only PATH, HOME and KUBECONFIG reach kubectl).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

import pytest
import trio

from tests.support.fake_kube import JsonObject

if TYPE_CHECKING:
    from tests.support.fake_kube import FakeKube

#: The bound of one kubectl command (the gcloud dispatcher in front of some kubectl
#: installations adds a /version round trip to each run).
KUBECTL_WAIT: Final = 30.0


def kubectl_binary() -> str:
    """The path of ``kubectl``; fails (CI) or skips (elsewhere) when it is missing."""
    path = shutil.which("kubectl")
    if path is None:
        message = "kubectl is not installed"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def parse_json_stream(text: str) -> list[JsonObject]:
    """The JSON documents of ``text`` (as ``kubectl -o json --watch`` prints them), in order;
    an incomplete last document is left out."""
    decoder = json.JSONDecoder()
    out: list[JsonObject] = []
    index = 0
    while True:
        while index < len(text) and text[index].isspace():
            index += 1
        if index >= len(text):
            return out
        try:
            document, index = decoder.raw_decode(text, index)
        except ValueError:
            return out
        out.append(document)


class Kubectl:
    """kubectl with a kubeconfig for ``kube`` written under ``directory``."""

    def __init__(
        self,
        kube: FakeKube,
        directory: Path,
        *,
        auth: Literal["token", "cert"] = "token",
        token: str | None = None,
        namespace: str = "default",
    ) -> None:
        self.binary = kubectl_binary()
        directory.mkdir(parents=True, exist_ok=True)
        config = kube.kubeconfig(
            directory / f"kubeconfig-{auth}", auth=auth, namespace=namespace, token=token
        )
        self.env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(directory),
            "KUBECONFIG": str(config),
        }

    async def run(
        self, *args: str, stdin: bytes | None = None
    ) -> subprocess.CompletedProcess[bytes]:
        """Run ``kubectl args`` to completion (not checked: look at ``returncode``)."""
        with trio.fail_after(KUBECTL_WAIT):
            return await trio.run_process(
                [self.binary, *args],
                stdin=stdin,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env=self.env,
            )

    def run_blocking(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        """``run`` for synchronous tests (kubectl is killed after ``KUBECTL_WAIT``)."""
        return subprocess.run(
            [self.binary, *args],
            capture_output=True,
            check=False,
            env=self.env,
            timeout=KUBECTL_WAIT,
            stdin=subprocess.DEVNULL,
        )

    @contextlib.asynccontextmanager
    async def open_watch(self, *args: str) -> AsyncIterator[KubectlWatch]:
        """Start ``kubectl args`` (a ``--watch``) and read its output as it comes; the process
        is killed at exit."""
        process = await trio.lowlevel.open_process(
            [self.binary, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
        )
        try:
            yield KubectlWatch(process)
        finally:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            with trio.move_on_after(5) as scope:
                scope.shield = True
                await process.wait()
            for pipe in (process.stdout, process.stderr):
                if pipe is not None:
                    await trio.aclose_forcefully(pipe)


class KubectlWatch:
    """The output of a running ``kubectl get --watch -o json``."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.text = ""

    async def documents(self, count: int) -> list[JsonObject]:
        """Read until kubectl printed at least ``count`` JSON documents (bounded)."""
        assert self.process.stdout is not None
        with trio.fail_after(KUBECTL_WAIT):
            while len(found := parse_json_stream(self.text)) < count:
                chunk = await self.process.stdout.receive_some(65536)
                if not chunk:
                    raise AssertionError(f"kubectl ended its output: {self.text!r}")
                self.text += chunk.decode()
        return found
