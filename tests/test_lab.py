"""JupyterLab, the design's first use (issue #28): a Jupyter server on 127.0.0.1 serves the notebooks,
and the kernel they name -- started through the server's REST API -- imports this checkout's
glamd_core and executes a notebook at smoke, cell by cell."""

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from jupyter_client import BlockingKernelClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = "notebooks/08_mask_visualization.ipynb"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _Server:
    def __init__(self, tmp_path: Path):
        self.port, self.token = _free_port(), secrets.token_hex(16)
        self.runtime = tmp_path / "runtime"
        env = os.environ | {"GLAMD_PROFILE": "smoke", "GLAMD_RUNS_DIR": str(tmp_path / "runs"),
                            "JUPYTER_RUNTIME_DIR": str(self.runtime)}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "jupyter", "server", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
             f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={REPO}",
             *(["--allow-root"] if os.geteuid() == 0 else [])],  # CI machines run as root
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def api(self, path: str, method: str = "GET", body: dict | None = None):
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}/api/{path}", method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Authorization": f"token {self.token}"})
        with urllib.request.urlopen(request, timeout=30) as reply:
            text = reply.read()
        return json.loads(text) if text else None

    def wait(self, seconds: float = 60):
        deadline = time.time() + seconds
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"jupyter server exited: {self.process.stderr.read()[-2000:]}")
            try:
                return self.api("status")
            except OSError:
                time.sleep(0.5)
        raise TimeoutError("jupyter server did not answer")

    def stop(self):
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture
def server(tmp_path):
    s = _Server(tmp_path)
    try:
        s.wait()
        yield s
    finally:
        s.stop()


def _run(client: BlockingKernelClient, code: str, timeout: float = 600) -> str:
    out = []

    def collect(msg):
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            out.append("\n".join(msg["content"]["traceback"]))

    reply = client.execute_interactive(code, timeout=timeout, output_hook=collect)
    assert reply["content"]["status"] == "ok", "".join(out)[-3000:]
    return "".join(out)


def test_the_notebooks_kernel_under_a_jupyter_server_runs_a_notebook_at_smoke(server, tmp_path):
    notebook = server.api(f"contents/{NOTEBOOK}")  # the server serves the notebook
    assert notebook["type"] == "notebook"
    kernel_name = notebook["content"]["metadata"]["kernelspec"]["name"]
    kernel = server.api("kernels", "POST", {"name": kernel_name, "path": "notebooks"})
    client = BlockingKernelClient(connection_file=str(server.runtime / f"kernel-{kernel['id']}.json"))
    client.load_connection_file()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=60)
        where = _run(client, "import glamd_core, os; print(glamd_core.__file__); print(os.environ['GLAMD_PROFILE'])")
        assert where.split() == [str(REPO / "glamd_core" / "__init__.py"), "smoke"]
        for cell in notebook["content"]["cells"]:
            if cell["cell_type"] == "code":
                _run(client, cell["source"])
        wrote = _run(client, "print(out)")
        assert Path(wrote.strip()) == REPO / "results" / "_smoke" / "08_mask_visualization"
        assert (Path(wrote.strip()) / "manifest.json").is_file()
    finally:
        client.stop_channels()
        server.api(f"kernels/{kernel['id']}", "DELETE")
