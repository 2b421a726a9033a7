"""A raw byte search of every service's SQLite and WAL files: what a closed account leaves behind, under every policy."""
import os
import shutil
import sqlite3
import tempfile
import time

import pytest

from lethe_demo.launcher import say

EVERY_SERVICE_WITH_DATA = ("oauth-gateway", "profile-store", "pdr-reporter", "erasure-executor", "python-participant")
PARTICIPANTS = ("profile-store", "oauth-gateway", "python-participant")


def sqlite_files(system, service):
    directory = os.path.join(system.run_dir, "data", service)
    return [os.path.join(directory, name) for name in sorted(os.listdir(directory))
            if name.endswith(".sqlite") or name.endswith(".sqlite-wal")]


def read(path):
    try:
        with open(path, "rb") as file:
            return file.read()
    except FileNotFoundError:  # a -wal file goes at a checkpoint
        return b""


@pytest.fixture(scope="module")
def contents(system):
    """path → bytes of every service's SQLite files, -wal files included."""
    files = []
    for root, _dirs, names in os.walk(os.path.join(system.run_dir, "data")):
        files += [os.path.join(root, name) for name in names if ".sqlite" in name]
    return {path: read(path) for path in sorted(files)}


def test_the_byte_scan_sees_every_services_sqlite_and_wal_files(scenario, contents):
    services = {os.path.basename(os.path.dirname(path)) for path in contents}
    assert set(EVERY_SERVICE_WITH_DATA) <= services, f"found data of {sorted(services)}"
    assert any(path.endswith("-wal") for path in contents), f"files {list(contents)}"
    # The scan must be able to see personal data: an active user's email is in profile-store's files.
    active = next(u for u in scenario.users if not u.closed)
    assert any(active.email.encode() in data for path, data in contents.items() if "/profile-store/" in path), \
        "an active user's email is not found in profile-store's files"


def test_no_name_or_email_of_a_closed_account_in_any_sqlite_or_wal_file(scenario, system, contents):
    closed = [u for u in scenario.users if u.closed]
    hits = [f"{user.label} {label} in {os.path.relpath(path, system.run_dir)}"
            for user in closed for label, value in (("name", user.name), ("email", user.email))
            for path, data in contents.items() if value.encode() in data]
    if hits:
        say("where (tables of a read-only copy holding them): " + locate(
            closed, [p for p in contents if p.endswith(".sqlite")]))
    say("scanned: " + ", ".join(f"{os.path.relpath(p, system.run_dir)} ({len(d)} B)" for p, d in contents.items()))
    assert not hits, "; ".join(hits)


# The executor never holds an active account's accountId (only an open erasure's), so it cannot show one.
@pytest.mark.parametrize("service", ("pdr-reporter",) + PARTICIPANTS)
def test_the_byte_scan_finds_an_active_accounts_account_id(scenario, system, service):
    active = next(u for u in scenario.users if not u.closed)
    assert any(active.account_id.encode() in read(path) for path in sqlite_files(system, service))


def test_the_scenario_closes_an_account_under_policy_delete_and_one_under_scrub(scenario):
    assert {u.tenant.policy for u in scenario.users if u.closed} >= {"delete", "scrub"}


def test_no_account_id_of_a_closed_account_in_any_services_files_under_any_policy(scenario, system):
    """No service keeps a closed account's accountId once its erasure is done: pdr-reporter and erasure-executor
    (the executor forgets it at completion, the reporter at the closed answer: its row goes, its changelog record
    is tombstoned), and every participant under every policy (under `scrub` the row stays under its platform
    user, unlinked) — the suppression lists hold digests, not accountIds.
    Not in the files' bytes either (secure_delete, then a WAL checkpoint). The release and the checkpoints follow
    the completion by a moment, hence the wait."""
    closed = [u for u in scenario.users if u.closed]

    def files():  # listed again at every look: a -wal file comes and goes
        return [path for service in ("pdr-reporter", "erasure-executor") + PARTICIPANTS
                for path in sqlite_files(system, service)]

    deadline = time.monotonic() + 20
    while True:
        hits = [f"{user.label} ({user.tenant.policy}) in {os.path.relpath(path, system.run_dir)}"
                for user in closed for path in files() if user.account_id.encode() in read(path)]
        if not hits or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if hits:
        say("where (tables of a read-only copy holding them): " + locate(
            closed, [p for p in files() if p.endswith(".sqlite")], account_ids=True))
    assert not hits, "; ".join(hits)


def locate(users, databases, account_ids=False):
    """Diagnostics for a failed scan: which tables of which files still hold the users' names and emails (or
    their accountIds) — a copy is opened, so the running service's files are never touched."""
    found = []
    with tempfile.TemporaryDirectory() as scratch:
        for path in databases:
            copy = os.path.join(scratch, os.path.basename(path))
            for suffix in ("", "-wal"):
                if os.path.exists(path + suffix):
                    shutil.copyfile(path + suffix, copy + suffix)
            try:
                db = sqlite3.connect(copy)
                tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
                for table in tables:
                    for row in db.execute(f'SELECT * FROM "{table}"'):
                        text = repr(row)
                        for user in users:
                            values = (user.account_id,) if account_ids else (user.name, user.email)
                            if any(value in text for value in values):
                                found.append(f"{os.path.basename(path)} table {table} ({user.label})")
                db.close()
            except sqlite3.Error as error:
                found.append(f"{os.path.basename(path)}: {error}")
    found = sorted(set(found))
    return "; ".join(found) or "no live row (only stale bytes: freed pages, old WAL frames)"
