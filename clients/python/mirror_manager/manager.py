"""The mirror manager's API, each operation one call (or a few) of mirrorhost's
admin API (``/api/v1``)."""

from __future__ import annotations

import enum
import os
import urllib.parse
from typing import Any, Dict, List, Mapping, Optional, Union

from ._http import DEFAULT_TIMEOUT, Api, Json

MirrorId = int

DEFAULT_URL = "http://127.0.0.1:8080"


class AuthMethod(str, enum.Enum):
    """How mirrorhost authenticates to a mirror's remote."""

    PASSWORD = "password"
    SSH_KEY = "ssh_key"
    TOKEN = "token"
    NONE = "none"


class Resolution(str, enum.Enum):
    """How a conflict is settled: our side kept, or theirs taken."""

    OURS = "ours"
    THEIRS = "theirs"


def _plain(value: Any) -> Any:
    """Enums as their ``.value``, recursively, so dicts go out as JSON."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _mirror(mirror_id: MirrorId) -> str:
    if isinstance(mirror_id, bool) or not isinstance(mirror_id, int):
        raise TypeError(f"mirror_id: must be an int, not {type(mirror_id).__name__}")
    return f"/api/v1/mirrors/{mirror_id}"


def _project(project_id: str) -> str:
    return "/api/v1/projects/" + urllib.parse.quote(project_id, safe="")


class _Part:
    def __init__(self, api: Api):
        self._api = api

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._api!r})"


class _Mirrors(_Part):
    """What pull and push mirrors share."""

    def _create(self, direction: str, config: Mapping[str, Any]) -> Json:
        return self._api.object("POST", f"/api/v1/mirrors/{direction}", body=_plain(config))

    def _update_now(self, mirror_id: MirrorId, wait: bool) -> Json:
        run = self._api.object("POST", _mirror(mirror_id) + "/sync", query={"wait": wait})
        if "status" in run:
            run["success"] = run["status"] == "succeeded"
        return run

    def get(self, mirror_id: MirrorId) -> Json:
        """The mirror's settings and status fields."""
        return self._api.object("GET", _mirror(mirror_id))

    def change(self, mirror_id: MirrorId, changes: Mapping[str, Any]) -> Json:
        """Changes settings (``PATCH``): only the keys given; ``None`` clears."""
        return self._api.object("PATCH", _mirror(mirror_id), body=_plain(changes))

    def enable(self, mirror_id: MirrorId) -> Json:
        return self.change(mirror_id, {"enabled": True})

    def disable(self, mirror_id: MirrorId) -> Json:
        return self.change(mirror_id, {"enabled": False})

    def delete(self, mirror_id: MirrorId) -> None:
        """Deletes the mirror with its history and credentials."""
        self._api.call("DELETE", _mirror(mirror_id))


class PullMirrors(_Mirrors):
    def create_pull_mirror(self, config: Mapping[str, Any]) -> Json:
        """Creates a pull mirror from ``project_id``, ``url``, ``auth_method``,
        ``update_interval`` (seconds), ``only_protected_branches`` and any other
        field of ``POST /api/v1/mirrors/pull``. The mirror, with ``mirror_id``."""
        return self._create("pull", config)

    def update_pull_mirror(self, mirror_id: MirrorId, wait: bool = True) -> Json:
        """Runs an update now. With ``wait`` (the default) the finished run,
        with ``success``; without, the queued run's ``run_id``."""
        return self._update_now(mirror_id, wait)


class PushMirrors(_Mirrors):
    def create_push_mirror(self, config: Mapping[str, Any]) -> Json:
        """Creates a push mirror from ``project_id``, ``url``, ``auth_method``,
        ``only_protected_branches``, ``keep_divergent_refs`` and any other field
        of ``POST /api/v1/mirrors/push``. The mirror, with ``mirror_id``."""
        return self._create("push", config)

    def update_push_mirror(self, mirror_id: MirrorId, wait: bool = True) -> Json:
        """Pushes now; as :meth:`PullMirrors.update_pull_mirror`."""
        return self._update_now(mirror_id, wait)


class Auth(_Part):
    """Credentials, stored sealed by mirrorhost and never returned."""

    def _store(self, mirror_id: MirrorId, secret: Json, *secrets: Optional[str]) -> Json:
        path = _mirror(mirror_id) + "/credentials"
        hidden = [s for s in secrets if s]
        return self._api.object("PUT", path, body=secret, secrets=hidden)

    def store_password_auth(self, mirror_id: MirrorId, username: str, password: str) -> Json:
        body = {"type": "password", "username": username, "password": password}
        return self._store(mirror_id, body, password)

    def store_ssh_key(self, mirror_id: MirrorId, private_key: str, passphrase: Optional[str] = None) -> Json:
        body: Json = {"type": "ssh_key", "private_key": private_key}
        if passphrase is not None:
            body["passphrase"] = passphrase
        return self._store(mirror_id, body, private_key, passphrase)

    def store_token_auth(self, mirror_id: MirrorId, token: str, username: Optional[str] = None) -> Json:
        body: Json = {"type": "token", "token": token}
        if username is not None:
            body["username"] = username
        return self._store(mirror_id, body, token)

    def get_auth(self, mirror_id: MirrorId) -> Json:
        """What is stored (type, username, when): never the secret."""
        return self._api.object("GET", _mirror(mirror_id) + "/credentials")

    def delete_auth(self, mirror_id: MirrorId) -> None:
        self._api.call("DELETE", _mirror(mirror_id) + "/credentials")

    def get_ssh_host_keys(self, mirror_id: MirrorId) -> List[Json]:
        return self._api.items("GET", _mirror(mirror_id) + "/ssh-host-keys", "host_keys")

    def set_ssh_host_keys(self, mirror_id: MirrorId, host_keys: List[Mapping[str, Any]]) -> List[Json]:
        body = {"host_keys": _plain(host_keys)}
        answer = self._api.object("PUT", _mirror(mirror_id) + "/ssh-host-keys", body=body)
        return list(answer["host_keys"])

    def detect_ssh_host_keys(self, mirror_id: MirrorId) -> List[Json]:
        """The keys the remote's SSH server offers now, to check and then set."""
        return self._api.items("POST", _mirror(mirror_id) + "/ssh-host-keys/detect", "host_keys")


class Scheduler(_Part):
    def set_update_schedule(self, mirror_id: MirrorId, schedule: Mapping[str, Any]) -> Json:
        """Sets ``interval_seconds`` or ``cron``, and ``enabled``."""
        return self._api.object("PUT", _mirror(mirror_id) + "/schedule", body=_plain(schedule))

    def get_schedule(self, mirror_id: MirrorId) -> Json:
        return self._api.object("GET", _mirror(mirror_id) + "/schedule")

    def disable_schedule(self, mirror_id: MirrorId) -> Json:
        return self._api.object("POST", _mirror(mirror_id) + "/schedule/disable")

    def enable_schedule(self, mirror_id: MirrorId) -> Json:
        return self._api.object("POST", _mirror(mirror_id) + "/schedule/enable")


class Monitoring(_Part):
    def record_update(
        self,
        mirror_id: MirrorId,
        success: bool,
        duration_ms: int,
        error: Optional[str] = None,
    ) -> Json:
        """Records an update done outside mirrorhost (a run with trigger
        ``external``); it counts in the mirror's health like any run."""
        body: Json = {"success": success, "duration_ms": duration_ms}
        if error is not None:
            body["error"] = error
        return self._api.object("POST", _mirror(mirror_id) + "/runs", body=body)

    def get_mirror_health(self, mirror_id: MirrorId, window: Optional[int] = None) -> Json:
        """``success_rate`` (percent), ``total_updates``, ``average_duration_ms``,
        ``last_error`` and more, over the latest ``window`` runs."""
        return self._api.object("GET", _mirror(mirror_id) + "/health", query={"window": window})

    def get_unhealthy_mirrors(self, min_success_rate: float = 90.0, window: Optional[int] = None) -> List[Json]:
        query = {"min_success_rate": min_success_rate, "window": window}
        return self._api.items("GET", "/api/v1/health/unhealthy", "mirrors", query)

    def get_metrics(self) -> str:
        """The Prometheus text ``/metrics`` serves."""
        return self._api.text("/metrics")


class Bandwidth(_Part):
    def set_bandwidth_limit(self, mirror_id: MirrorId, limits: Mapping[str, Any]) -> Json:
        """``max_bytes_per_second``, ``max_concurrent_updates``, ``throttle_on_failure``."""
        return self._api.object("PUT", _mirror(mirror_id) + "/bandwidth", body=_plain(limits))

    def get_bandwidth_limit(self, mirror_id: MirrorId) -> Json:
        return self._api.object("GET", _mirror(mirror_id) + "/bandwidth")


class Conflicts(_Part):
    def detect_conflicts(self, mirror_id: MirrorId) -> Json:
        """A dry run against the remote; no ref changes. Empty when nothing
        diverged; otherwise ``conflicts`` (each open, with a ``conflict_id`` for
        :meth:`resolve_conflict`), ``conflict_id`` (the first one's), and the
        run's ``plan``."""
        found = self._api.object("POST", _mirror(mirror_id) + "/conflicts/detect")
        if not found["conflicts"]:
            return {}
        found["conflict_id"] = found["conflicts"][0]["conflict_id"]
        return found

    def resolve_conflict(
        self, mirror_id: MirrorId, conflict_id: int, resolution: Union[Resolution, str]
    ) -> Json:
        """Settles an open conflict: ``'ours'`` keeps our side, ``'theirs'``
        takes the remote's (on a pull mirror the local ref moves to upstream's
        tip and the push mirrors follow)."""
        path = f"{_mirror(mirror_id)}/conflicts/{conflict_id}/resolve"
        return self._api.object("POST", path, body={"strategy": _plain(resolution)})

    def get_conflicts(self, mirror_id: MirrorId, status: Optional[str] = None) -> List[Json]:
        """Every conflict on record, newest first (``status``: open, resolved, aborted)."""
        return self._api.pages(_mirror(mirror_id) + "/conflicts", "conflicts", {"status": status})


class Runs(_Part):
    def get_runs(self, mirror_id: MirrorId, status: Optional[str] = None) -> List[Json]:
        """The mirror's kept runs, newest first."""
        return self._api.pages(_mirror(mirror_id) + "/runs", "runs", {"status": status})

    def get_run(self, run_id: int) -> Json:
        """A run, with its transfer progress while it runs."""
        return self._api.object("GET", f"/api/v1/runs/{int(run_id)}")

    def get_run_refs(self, run_id: int) -> List[Json]:
        """What the run did to each ref it did not leave alone, and why."""
        return self._api.items("GET", f"/api/v1/runs/{int(run_id)}/refs", "refs")

    def cancel_run(self, run_id: int) -> Json:
        return self._api.object("POST", f"/api/v1/runs/{int(run_id)}/cancel")


class Projects(_Part):
    def set_protected_branches(self, project_id: str, branches: List[str]) -> Json:
        """The branches ``only_protected_branches`` mirrors keep to (globs allowed)."""
        return self._api.object("PUT", _project(project_id) + "/protected-branches", body=list(branches))

    def set_webhook_secret(self, project_id: str, secret: str) -> Json:
        """GitHub's webhook secret or GitLab's token for the project's push hooks."""
        path = _project(project_id) + "/webhook"
        return self._api.object("PUT", path, body={"secret": secret}, secrets=[secret])

    def housekeeping(self, project_id: str) -> Json:
        """Packs the project's repository anew now."""
        return self._api.object("POST", _project(project_id) + "/housekeeping")


class Plugins(_Part):
    def list_plugins(self) -> List[Json]:
        return self._api.items("GET", "/api/v1/plugins", "plugins")

    def upload_plugin(self, name: str, world: str, component: bytes) -> Json:
        """Uploads a WebAssembly component; it is checked against ``world``."""
        query = {"name": name, "world": world}
        return self._api.upload("/api/v1/plugins", component, "application/wasm", query)

    def delete_plugin(self, name: str) -> None:
        self._api.call("DELETE", "/api/v1/plugins/" + urllib.parse.quote(name, safe=""))


class MirrorManagementManager:
    """Entry point: ``MirrorManagementManager(url, token)``.

    ``url`` falls back to ``MIRRORHOST_URL`` (then ``http://127.0.0.1:8080``),
    ``token`` to ``MIRRORHOST_ADMIN_TOKEN``.
    """

    def __init__(self, url: Optional[str] = None, token: Optional[str] = None, timeout: float = DEFAULT_TIMEOUT):
        url = url or os.environ.get("MIRRORHOST_URL") or DEFAULT_URL
        token = token or os.environ.get("MIRRORHOST_ADMIN_TOKEN")
        self._api = Api(url, token, timeout)
        self.pull_mirrors = PullMirrors(self._api)
        self.push_mirrors = PushMirrors(self._api)
        self.auth = Auth(self._api)
        self.scheduler = Scheduler(self._api)
        self.monitoring = Monitoring(self._api)
        self.bandwidth = Bandwidth(self._api)
        self.conflicts = Conflicts(self._api)
        self.runs = Runs(self._api)
        self.projects = Projects(self._api)
        self.plugins = Plugins(self._api)

    def __repr__(self) -> str:
        return f"MirrorManagementManager(url={self._api.url!r})"

    def get_all_mirrors(self, project_id: Optional[str] = None, **filters: Any) -> List[Json]:
        """Every mirror (of ``project_id`` when given); ``filters``: ``direction``,
        ``enabled``, ``state``, ``search`` (text in the project id or URL), and the
        order: ``order_by`` (``id``, ``project_id``, ``state``, ``last_update_at``)
        with ``sort`` (``asc``, ``desc``)."""
        query = {"project_id": project_id, **_plain(filters)}
        return self._api.pages("/api/v1/mirrors", "mirrors", query)
