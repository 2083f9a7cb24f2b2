"""A script as people write them against the mirror manager's API, run
against a real mirrorhost and real remotes; results checked with the git CLI."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Dict

from conftest import ADMIN_TOKEN, PASSWORD, TOKEN
from servers import GitHttpServer, Mirrorhost, bare_repository, commit, git, work_tree

from mirror_manager import AuthMethod, MirrorManagementManager

PROJECT = "team/app"


def refs(repo: Path) -> Dict[str, str]:
    """Ref name -> object id of a bare repository, by the git CLI."""
    listing = git("for-each-ref", "--format=%(refname) %(objectname)", cwd=repo)
    return dict(line.split(" ", 1) for line in listing.splitlines() if line)


def branches_and_tags(repo: Path) -> Dict[str, str]:
    return {k: v for k, v in refs(repo).items() if k.startswith(("refs/heads/", "refs/tags/"))}


def wait_until(check, what: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def seed_upstream(remotes: GitHttpServer, tmp_path: Path) -> Path:
    upstream = bare_repository(remotes.root, "up.git")
    tree = work_tree(tmp_path / "seed", str(upstream))
    commit(tree, "README", "hello\n")
    commit(tree, "main.c", "int main(void) { return 0; }\n")
    git("push", "-q", "origin", "HEAD:refs/heads/main", cwd=tree)
    git("checkout", "-q", "-b", "feature", cwd=tree)
    commit(tree, "feature.c", "void feature(void) {}\n")
    git("push", "-q", "origin", "feature", cwd=tree)
    git("tag", "v1.0", "main", cwd=tree)
    git("push", "-q", "origin", "v1.0", cwd=tree)
    return upstream


def test_a_mirror_managers_script_runs_unchanged(
    service: Mirrorhost, remotes: GitHttpServer, tmp_path: Path
) -> None:
    upstream = seed_upstream(remotes, tmp_path)
    destination = bare_repository(remotes.root, "dest.git")
    mgr = MirrorManagementManager(service.url, ADMIN_TOKEN)

    # Create a pull and a push mirror with their credentials.
    pull = mgr.pull_mirrors.create_pull_mirror(
        {
            "project_id": PROJECT,
            "url": remotes.url("up.git"),
            "auth_method": AuthMethod.PASSWORD.value,
            "update_interval": 3600,
            "only_protected_branches": False,
        }
    )
    pull_id = pull["mirror_id"]
    assert pull["direction"] == "pull" and pull["auth_method"] == "password"
    stored = mgr.auth.store_password_auth(pull_id, "mirror", PASSWORD)
    assert PASSWORD not in repr(stored) and stored["type"] == "password"

    push = mgr.push_mirrors.create_push_mirror(
        {
            "project_id": PROJECT,
            "url": remotes.url("dest.git"),
            "auth_method": AuthMethod.TOKEN,
            "only_protected_branches": False,
            "keep_divergent_refs": False,
        }
    )
    push_id = push["mirror_id"]
    mgr.auth.store_token_auth(push_id, TOKEN)

    # Schedule: interval, disable, cron.
    schedule = mgr.scheduler.set_update_schedule(pull_id, {"interval_seconds": 600, "enabled": True})
    assert (schedule["interval_seconds"], schedule["enabled"]) == (600, True)
    assert mgr.scheduler.disable_schedule(pull_id)["enabled"] is False
    assert mgr.scheduler.get_schedule(pull_id)["enabled"] is False
    cron = mgr.scheduler.set_update_schedule(pull_id, {"cron": "*/30 * * * *", "enabled": True})
    assert cron["cron"] == "*/30 * * * *" and "interval_seconds" not in cron

    # Update now: the local copy matches upstream, then the destination does.
    run = mgr.pull_mirrors.update_pull_mirror(pull_id)
    assert run["success"] is True, run
    local = service.repository(PROJECT)
    assert branches_and_tags(local) == branches_and_tags(upstream)
    pushed = mgr.push_mirrors.update_push_mirror(push_id)
    assert pushed["success"] is True, pushed
    assert branches_and_tags(destination) == branches_and_tags(upstream)
    git("fsck", "--strict", cwd=local)
    git("fsck", "--strict", cwd=destination)

    # Health: every run counts, and so does an update recorded from outside.
    health = mgr.monitoring.get_mirror_health(pull_id)
    assert health["success_rate"] == 100.0 and health["total_updates"] == 1, health
    assert health["last_error"] is None
    recorded = mgr.monitoring.record_update(pull_id, False, 1500, "nightly job: remote timed out")
    assert (recorded["trigger"], recorded["status"], recorded["duration_ms"]) == ("external", "failed", 1500)
    mgr.monitoring.record_update(pull_id, True, 500)
    mgr.monitoring.record_update(pull_id, False, 2500, "nightly job: remote timed out")
    health = mgr.monitoring.get_mirror_health(pull_id)
    assert health["total_updates"] == 4 and health["success_rate"] == 50.0, health
    assert health["last_error"] == "nightly job: remote timed out"
    expected_average = (run["duration_ms"] + 1500 + 500 + 2500) / 4
    assert abs(health["average_duration_ms"] - expected_average) <= 1, health
    unhealthy = mgr.monitoring.get_unhealthy_mirrors(min_success_rate=90.0)
    assert [m["mirror_id"] for m in unhealthy] == [pull_id]
    assert mgr.monitoring.get_unhealthy_mirrors(min_success_rate=40.0) == []

    # Bandwidth.
    limits = {"max_bytes_per_second": 1048576, "max_concurrent_updates": 2, "throttle_on_failure": True}
    assert mgr.bandwidth.set_bandwidth_limit(pull_id, limits) == limits
    assert mgr.bandwidth.get_bandwidth_limit(pull_id) == limits

    # Nothing diverged yet: detection finds nothing.
    assert mgr.conflicts.detect_conflicts(pull_id) == {}

    # Upstream is force-pushed: detection opens a conflict and changes nothing.
    before = refs(local)
    rewrite = work_tree(tmp_path / "rewrite", str(upstream))
    git("reset", "-q", "--hard", "HEAD~1", cwd=rewrite)
    rewritten = commit(rewrite, "main.c", "int main(void) { return 1; }\n")
    git("push", "-q", "--force", "origin", "HEAD:refs/heads/main", cwd=rewrite)
    found = mgr.conflicts.detect_conflicts(pull_id)
    assert [c["ref_name"] for c in found["conflicts"]] == ["refs/heads/main"], found
    conflict_id = found["conflict_id"]
    assert found["conflicts"][0]["remote_oid"] == rewritten
    assert found["conflicts"][0]["status"] == "open"
    assert refs(local) == before
    # Asking again finds the same conflict, not a second one.
    assert mgr.conflicts.detect_conflicts(pull_id)["conflict_id"] == conflict_id

    resolved = mgr.conflicts.resolve_conflict(pull_id, conflict_id, "theirs")
    assert (resolved["status"], resolved["resolution"]) == ("resolved", "theirs")
    assert refs(local)["refs/heads/main"] == rewritten
    # Taking upstream's side moved a local ref: the push mirror follows.
    wait_until(lambda: refs(destination).get("refs/heads/main") == rewritten, "the push mirror")
    git("fsck", "--strict", cwd=local)
    git("fsck", "--strict", cwd=destination)

    history = mgr.conflicts.get_conflicts(pull_id)
    assert [(c["conflict_id"], c["resolution"]) for c in history] == [(conflict_id, "theirs")]

    # The project's mirrors.
    mirrors = mgr.get_all_mirrors(PROJECT)
    assert sorted(m["mirror_id"] for m in mirrors) == sorted([pull_id, push_id])
    assert mgr.get_all_mirrors("team/other") == []


def test_a_push_mirror_keeps_a_diverged_destination_until_told(
    service: Mirrorhost, remotes: GitHttpServer, tmp_path: Path
) -> None:
    upstream = seed_upstream(remotes, tmp_path)
    destination = bare_repository(remotes.root, "dest.git")
    mgr = MirrorManagementManager(service.url, ADMIN_TOKEN)
    pull_id = mgr.pull_mirrors.create_pull_mirror(
        {"project_id": PROJECT, "url": remotes.url("up.git"), "auth_method": "password"}
    )["mirror_id"]
    mgr.auth.store_password_auth(pull_id, "mirror", PASSWORD)
    push_id = mgr.push_mirrors.create_push_mirror(
        {
            "project_id": PROJECT,
            "url": remotes.url("dest.git"),
            "auth_method": "token",
            "keep_divergent_refs": True,
        }
    )["mirror_id"]
    mgr.auth.store_token_auth(push_id, TOKEN)
    assert mgr.pull_mirrors.update_pull_mirror(pull_id)["success"]
    wait_until(lambda: branches_and_tags(destination) == branches_and_tags(upstream), "the first push")

    # Someone commits on the destination directly.
    elsewhere = work_tree(tmp_path / "elsewhere", str(destination))
    theirs = commit(elsewhere, "hotfix.c", "/* made on the destination */\n")
    git("push", "-q", "origin", "HEAD:refs/heads/main", cwd=elsewhere)
    ours = refs(service.repository(PROJECT))["refs/heads/main"]

    run = mgr.push_mirrors.update_push_mirror(push_id)
    assert run["success"] is True, run
    assert refs(destination)["refs/heads/main"] == theirs
    kept = [r for r in mgr.runs.get_run_refs(run["run_id"]) if r["ref_name"] == "refs/heads/main"]
    assert len(kept) == 1, kept

    found = mgr.conflicts.detect_conflicts(push_id)
    assert found["conflicts"][0]["ref_name"] == "refs/heads/main", found
    open_ones = mgr.conflicts.get_conflicts(push_id, status="open")
    assert [c["conflict_id"] for c in open_ones] == [found["conflict_id"]]

    mgr.conflicts.resolve_conflict(push_id, found["conflict_id"], "ours")
    assert refs(destination)["refs/heads/main"] == ours
    assert mgr.conflicts.get_conflicts(push_id, status="open") == []
    git("fsck", "--strict", cwd=destination)

    runs = mgr.runs.get_runs(push_id)
    assert runs and all(r["mirror_id"] == push_id for r in runs)
