"""Every service's request log: the caller's request id in and out, and no personal data — logs are copied, shipped
and kept where no erasure reaches them."""
import os
import time

import pytest

from lethe_demo.http_client import http
from lethe_demo.system import SERVICES


@pytest.fixture(scope="module")
def probes(scenario, system):
    """service → the answer to a path no route matches, holding an accountId (which must not reach the log), sent
    with the request id e2e-probe-<service>."""
    account_id = scenario.users[0].account_id
    return {service: http("GET", f"{system.url(service)}/v1/no-such-route/{account_id}",
                          headers={"X-Request-Id": f"e2e-probe-{service}"}) for service in SERVICES}


@pytest.mark.parametrize("service", SERVICES)
def test_an_unmatched_path_answers_404_with_the_callers_request_id(probes, service):
    answer = probes[service]
    assert answer.status == 404 and answer.headers.get("X-Request-Id") == f"e2e-probe-{service}", answer.brief()


def test_every_service_logs_a_request_line_under_the_callers_request_id(system, probes):
    def logged(service):
        with open(os.path.join(system.run_dir, "logs", f"{service}.log"), "rb") as file:
            return f"e2e-probe-{service}".encode() in file.read()

    deadline = time.monotonic() + 5
    missing = list(probes)
    while missing and time.monotonic() < deadline:
        time.sleep(0.2)
        missing = [service for service in probes if not logged(service)]
    assert not missing, f"no line in the log of {', '.join(missing)}"


@pytest.fixture(scope="module")
def logs(system, probes):
    """log file name → its bytes, read once the probes (their paths hold an accountId) were answered."""
    directory = os.path.join(system.run_dir, "logs")
    logs = {}
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as file:
            logs[name] = file.read()
    return logs


def test_every_service_wrote_a_log_to_scan(logs):
    assert {f"{service}.log" for service in SERVICES} | {"python-participant.log"} <= set(logs) \
        and all(logs.values()), f"logs {sorted(logs)}"


def test_no_account_id_name_or_email_of_any_user_in_any_services_log(scenario, logs):
    hits = sorted({f"{user.label} {label} in {name}" for user in scenario.users
                   for label, value in (("accountId", user.account_id), ("name", user.name), ("email", user.email))
                   for name, data in logs.items() if value.encode() in data})
    assert not hits, "; ".join(hits)
