"""A real Chroma server for the tests (`chroma run`, the CLI chromadb installs), on loopback over a
folder of its own; it can be killed and started again on the same folder."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from t0_pipeline.config import ChromaConfig, DataPaths
from t0_pipeline_tests.serving import free_port


class ChromaServer:
    def __init__(self, path: Path):
        self.exe = shutil.which("chroma") or shutil.which(
            "chroma", path=str(Path(sys.executable).parent)
        )
        if self.exe is None:
            pytest.fail("the chroma CLI is not installed (it comes with chromadb)")
        self.path, self.port = path, free_port()
        self.log = path.with_suffix(".log")
        self.proc: subprocess.Popen | None = None

    @property
    def config(self) -> ChromaConfig:
        return ChromaConfig(host="127.0.0.1", port=self.port)

    def start(self, timeout_s: float = 90) -> ChromaServer:
        from t0_pipeline.retrieval.chroma_store import chroma_client

        command = [self.exe, "run", "--path", str(self.path), "--host", "127.0.0.1"]
        command += ["--port", str(self.port)]
        self.proc = subprocess.Popen(command, stdout=self.log.open("a"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                chroma_client(self.config, DataPaths(self.path.parent)).heartbeat()
                return self
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(
                        f"the Chroma server did not start:\n{self.log.read_text()}"
                    )
                time.sleep(0.3)

    def kill(self) -> None:
        """SIGKILL, as when its host goes down: no goodbye to the clients."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)
