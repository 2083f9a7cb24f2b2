"""Errors carry the API's status, code, field and message, and never a secret."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import ADMIN_TOKEN
from servers import Mirrorhost

from mirror_manager import AuthMethod, MirrorManagementManager, MirrorManagerError, TransportError


def pull_mirror(mgr: MirrorManagementManager, auth_method: AuthMethod = AuthMethod.NONE) -> int:
    url = "https://git.example.com/team/app.git"
    config = {"project_id": "team/app", "url": url, "auth_method": auth_method}
    return mgr.pull_mirrors.create_pull_mirror(config)["mirror_id"]


def test_a_refused_field_is_named(service: Mirrorhost) -> None:
    mgr = MirrorManagementManager(service.url, ADMIN_TOKEN)
    with pytest.raises(MirrorManagerError) as refused:
        mgr.pull_mirrors.create_pull_mirror({"project_id": "team/app", "url": "ftp://example.com/x"})
    assert (refused.value.status, refused.value.code, refused.value.field) == (422, "invalid_field", "url")
    assert "url" in refused.value.message
    mirror_id = pull_mirror(mgr)
    with pytest.raises(MirrorManagerError) as refused:
        mgr.scheduler.set_update_schedule(mirror_id, {"interval_seconds": -5})
    assert (refused.value.status, refused.value.field) == (422, "interval_seconds")
    with pytest.raises(MirrorManagerError) as refused:
        mgr.monitoring.record_update(mirror_id, True, -1)
    assert (refused.value.status, refused.value.field) == (422, "duration_ms")
    with pytest.raises(MirrorManagerError) as refused:
        mgr.conflicts.resolve_conflict(mirror_id, 1, "sideways")
    assert (refused.value.status, refused.value.field) == (422, "strategy")


def test_missing_things_are_not_found(service: Mirrorhost) -> None:
    mgr = MirrorManagementManager(service.url, ADMIN_TOKEN)
    for call in (
        lambda: mgr.monitoring.get_mirror_health(4242),
        lambda: mgr.pull_mirrors.update_pull_mirror(4242),
        lambda: mgr.monitoring.record_update(4242, True, 10),
        lambda: mgr.conflicts.detect_conflicts(4242),
        lambda: mgr.bandwidth.get_bandwidth_limit(4242),
    ):
        with pytest.raises(MirrorManagerError) as missing:
            call()
        assert (missing.value.status, missing.value.code) == (404, "not_found")
    with pytest.raises(TypeError):
        mgr.scheduler.get_schedule("4242")  # type: ignore[arg-type]


def test_secrets_stay_out_of_errors_and_reprs(service: Mirrorhost) -> None:
    mgr = MirrorManagementManager(service.url, ADMIN_TOKEN)
    assert ADMIN_TOKEN not in repr(mgr) and ADMIN_TOKEN not in repr(mgr.auth)
    secret = "hunter2-do-not-print"
    with pytest.raises(MirrorManagerError) as refused:
        mgr.auth.store_password_auth(4242, "someone", secret)
    for text in (str(refused.value), repr(refused.value), refused.value.message):
        assert secret not in text and ADMIN_TOKEN not in text
    mirror_id = pull_mirror(mgr, AuthMethod.SSH_KEY)
    with pytest.raises(MirrorManagerError) as refused:
        mgr.auth.store_ssh_key(mirror_id, "-----BEGIN NOT A KEY " + secret, passphrase=secret)
    assert refused.value.status == 422 and refused.value.field == "private_key"
    for text in (str(refused.value), repr(refused.value)):
        assert secret not in text

    wrong = MirrorManagementManager(service.url, "not-the-token-" + secret)
    with pytest.raises(MirrorManagerError) as denied:
        wrong.get_all_mirrors()
    assert (denied.value.status, denied.value.code) == (401, "unauthorized")
    assert secret not in str(denied.value) and secret not in repr(wrong)


def test_an_ssh_key_with_a_passphrase_is_stored_sealed(service: Mirrorhost, tmp_path: Path) -> None:
    mgr = MirrorManagementManager(service.url, ADMIN_TOKEN)
    key = tmp_path / "id_ed25519"
    passphrase = "correct horse battery"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f", str(key)], check=True
    )
    mirror_id = mgr.pull_mirrors.create_pull_mirror(
        {"project_id": "team/app", "url": "ssh://git@git.example.com/team/app.git", "auth_method": "ssh_key"}
    )["mirror_id"]
    stored = mgr.auth.store_ssh_key(mirror_id, key.read_text(), passphrase=passphrase)
    assert stored["type"] == "ssh_key"
    assert mgr.auth.get_auth(mirror_id)["type"] == "ssh_key"
    database = (service.data_dir / "mirrorhost.db").read_bytes()
    assert passphrase.encode() not in database
    assert key.read_text().splitlines()[1].encode() not in database


def test_url_and_token_come_from_the_environment(service: Mirrorhost, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MIRRORHOST_URL", service.url)
    monkeypatch.setenv("MIRRORHOST_ADMIN_TOKEN", ADMIN_TOKEN)
    mgr = MirrorManagementManager()
    assert mgr.get_all_mirrors() == []
    names = {p["name"] for p in mgr.plugins.list_plugins()}
    assert {"theirs", "ours", "manual", "password", "token", "ssh-key"} <= names


def test_an_unreachable_service_is_one_clear_error() -> None:
    mgr = MirrorManagementManager("http://127.0.0.1:9", "secret-token-value")
    with pytest.raises(TransportError) as unreachable:
        mgr.get_all_mirrors()
    assert "cannot reach" in str(unreachable.value)
    assert "secret-token-value" not in str(unreachable.value)


def test_a_plugin_that_is_no_component_is_refused(service: Mirrorhost) -> None:
    mgr = MirrorManagementManager(service.url, ADMIN_TOKEN)
    with pytest.raises(MirrorManagerError) as refused:
        mgr.plugins.upload_plugin("not-wasm", "conflict-strategy", b"\x00asm but not really")
    assert refused.value.status == 422, refused.value
    assert "not-wasm" not in {p["name"] for p in mgr.plugins.list_plugins()}
    with pytest.raises(MirrorManagerError) as builtin:
        mgr.plugins.delete_plugin("theirs")
    assert builtin.value.status == 409
