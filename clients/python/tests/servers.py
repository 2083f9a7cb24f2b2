"""Real servers for the tests: `git http-backend` behind HTTP Basic auth, and
`mirrorhost serve` itself."""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import List, Optional, Set, Tuple


def git(*args: str, cwd: Optional[Path] = None) -> str:
    """Runs the git CLI; its standard output, stripped."""
    env = {**os.environ, "GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0"}
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True
    )
    return done.stdout.strip()


class GitHttpServer:
    """`git http-backend` as a CGI behind Basic auth, serving the bare
    repositories under ``root``: any of ``logins`` (user, password) may fetch
    and push; a login with user ``*`` takes any user name (a token)."""

    def __init__(self, root: Path, logins: Set[Tuple[str, str]]):
        self.root = root
        self.logins = logins
        handler = type("Handler", (_CgiHandler,), {"front": self})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/{name}"

    def authorized(self, header: Optional[str]) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        return (user, password) in self.logins or ("*", password) in self.logins

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _CgiHandler(BaseHTTPRequestHandler):
    front: GitHttpServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass

    def do_GET(self) -> None:  # noqa: N802
        self._cgi()

    def do_POST(self) -> None:  # noqa: N802
        self._cgi()

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _cgi(self) -> None:
        body = self._body()
        if not self.front.authorized(self.headers.get("Authorization")):
            self._answer(401, [("WWW-Authenticate", 'Basic realm="git"')], b"authentication required")
            return
        path, _, query = self.path.partition("?")
        env = {
            "PATH": os.environ.get("PATH", ""),
            "GIT_PROJECT_ROOT": str(self.front.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_COUNT": "1",
            "GIT_CONFIG_KEY_0": "http.receivepack",
            "GIT_CONFIG_VALUE_0": "true",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
            "REMOTE_ADDR": "127.0.0.1",
            "REMOTE_USER": "mirror",
        }
        out = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status, headers = 200, []
        for line in head.decode("latin-1").split("\r\n"):
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        self._answer(status, headers, payload)

    def _answer(self, status: int, headers: List[Tuple[str, str]], payload: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class Mirrorhost:
    """`mirrorhost serve` on a fresh data directory, on a free loopback port."""

    def __init__(self, binary: Path, data_dir: Path, token: str, plugin_cache: Path):
        self.data_dir = data_dir
        self.log_path = data_dir.parent / "mirrorhost.log"
        env = {
            **os.environ,
            "MIRRORHOST_ADMIN_TOKEN": token,
            "MIRRORHOST_PLUGIN_CACHE_DIR": str(plugin_cache),
            "RUST_LOG": "info",
        }
        self.log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [
                str(binary), "serve",
                "--listen", "127.0.0.1:0",
                "--data-dir", str(data_dir),
                "--allow-local-remotes", "true",
                "--allow-http-remotes", "true",
                "--min-interval-seconds", "1",
            ],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        self.url = "http://" + self._bound(deadline=time.monotonic() + 180)

    def _bound(self, deadline: float) -> str:
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mirrorhost exited: {self.log_text()}")
            found = re.search(r"listening bound=(\S+)", self.log_text())
            if found:
                address = found.group(1)
                urllib.request.urlopen(f"http://{address}/readyz", timeout=10).read()
                return address
            time.sleep(0.1)
        raise RuntimeError(f"mirrorhost never listened: {self.log_text()}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def repository(self, project_id: str) -> Path:
        """The local bare copy of ``project_id``."""
        return self.data_dir / "repos" / (project_id + ".git")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


def bare_repository(root: Path, name: str) -> Path:
    """A new empty bare repository ``root/name``."""
    path = root / name
    git("init", "-q", "--bare", "-b", "main", str(path))
    return path


def work_tree(path: Path, remote: str) -> Path:
    """A clone of ``remote`` to commit in, with an identity."""
    shutil.rmtree(path, ignore_errors=True)
    git("clone", "-q", remote, str(path))
    git("config", "user.name", "Script", cwd=path)
    git("config", "user.email", "script@example.com", cwd=path)
    return path


def commit(tree: Path, name: str, text: str) -> str:
    """Writes ``name`` and commits it; the new commit's id."""
    (tree / name).write_text(text)
    git("add", name, cwd=tree)
    git("commit", "-q", "-m", f"{name}: {text[:20]}", cwd=tree)
    return git("rev-parse", "HEAD", cwd=tree)
