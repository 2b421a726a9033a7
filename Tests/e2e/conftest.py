"""The end-to-end run: the whole system as local processes, the demo's scenario played once for the session (through
public interfaces only, from scripts/lethe_demo), with the probes only a test makes; the test modules then assert on
what it saw and what it left. It takes a few minutes (two 30-second PDR cycles).

Needs the service binaries (LETHE_DEMO_BIN_DIR, default .build/debug) and a broker (KAFKA_BOOTSTRAP_SERVERS, or the dev
broker is started and stopped); scripts/lethe-demo documents every variable. Nothing is skipped: when the system
cannot start, every test fails with the reason. The events the run produced are written to LETHE_CONTRACT_SAMPLES_DIR
(default <run folder>/samples) for scripts/validate-contracts."""
import os
import signal
import sys
import time
from dataclasses import dataclass

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "scripts"))
from lethe_demo.http_client import http  # noqa: E402 (the package is found through the path set above)
from lethe_demo.launcher import log_as, say  # noqa: E402
from lethe_demo.scenario import Scenario  # noqa: E402
from lethe_demo.system import System  # noqa: E402

from contract_samples import dump_event_samples  # noqa: E402
from ssf_receiver import PURGED, Receiver, create_stream  # noqa: E402
from billing_participant import BillingParticipant  # noqa: E402
from console_run import ConsoleRun  # noqa: E402


@dataclass
class Played:
    scenario: Scenario
    callback_replays: dict  # tenant id → the answer to its first user's callback, sent again after the sign-in
    not_reported_again: list  # (appId, accountId) of the active accounts the second cycle did not report
    ssf: "SharedSignalsRun"
    console: ConsoleRun
    billing: BillingParticipant


@dataclass
class SharedSignalsRun:
    receiver: Receiver
    streams: dict  # tenant id → the stream configuration its creation answered
    refused_before_restart: int  # user-event pushes the receiver had refused when the gateway was restarted
    restarted: bool = False


@pytest.fixture(scope="session")
def played():
    log_as("e2e")
    for sig in (signal.SIGTERM, signal.SIGHUP):  # as Ctrl-C: pytest then tears down, which stops every process
        signal.signal(sig, raise_keyboard_interrupt)
    system = System("e2e")
    receiver = Receiver()
    billing = None
    try:
        system.prepare()
        say(f"run folder {system.run_dir} (logs/ and data/), topic namespace {system.namespace}")
        scenario = Scenario(system)
        replays = {}

        def replay_first_callback(user):
            # At once, while the state is recorded as used and not yet expired: the replay must fail as a replay.
            if user is user.tenant.users[0]:
                replays[user.tenant.id] = http("GET", user.callback_url)

        scenario.sign_in_everyone(after_each_sign_in=replay_first_callback)
        billing = BillingParticipant(system, failing_tenant=scenario.acme.id).start()
        say("e2e-billing declared itself a participant; it will fail acme's erasure once")
        console = ConsoleRun(system, scenario.acme.id)
        ssf = SharedSignalsRun(receiver.start(), {}, 0)
        for tenant in scenario.tenants:
            ssf.streams[tenant.id] = create_stream(system, tenant, receiver)
        say(f"Shared Signals: a push stream per tenant to {receiver.url('<tenant>')}; user events refused (500) "
            "until the gateway has been restarted")
        receiver.refusing.set()
        scenario.close_accounts_and_wait_for_outcomes(
            while_waiting=lambda: (restart_gateway_once_refused(system, ssf), console.step()))
        not_reported_again = scenario.wait_second_cycle()
        wait_for_purges(scenario, receiver)
        scenario.collect_after()
        write_contract_samples(system)
        yield Played(scenario, replays, not_reported_again, ssf, console, billing)
    finally:
        receiver.stop()
        if billing:
            billing.stop()
        system.shutdown()


def restart_gateway_once_refused(system, ssf):
    """Once the receiver has refused a user event, the gateway is restarted with it still queued; the receiver then
    takes events again."""
    if ssf.restarted:
        return
    refused = [push for push in ssf.receiver.received() if push.status != 202]
    if refused:
        ssf.refused_before_restart = len(refused)
        say(f"Shared Signals: the receiver refused {len(refused)} user event push(es); restarting oauth-gateway")
        system.restart("oauth-gateway")
        ssf.restarted = True
        ssf.receiver.refusing.clear()


def wait_for_purges(scenario, receiver, timeout=90):
    """Until every closed user's account-purged was taken by its tenant's receiver (the suite asserts on the rest)."""
    closed = [user for user in scenario.users if user.closed]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        taken = {(push.tenant_id, push.unverified_claims().get("txn")) for push in receiver.received()
                 if push.status == 202 and PURGED in push.unverified_events()}
        if all(sum(1 for tenant_id, _ in taken if tenant_id == tenant.id) >= sum(1 for u in tenant.users if u.closed)
               for tenant in scenario.tenants):
            say(f"Shared Signals: account-purged taken for {len(closed)} closed users")
            return
        time.sleep(1)
    say(f"Shared Signals: not every account-purged was taken within {timeout} s")


def raise_keyboard_interrupt(_signum, _frame):
    raise KeyboardInterrupt


def write_contract_samples(system):
    samples = os.environ.get("LETHE_CONTRACT_SAMPLES_DIR") or os.path.join(system.run_dir, "samples")
    counts = dump_event_samples(system, samples)
    say(f"contract samples: {sum(counts.values())} events the run produced written to {samples} "
        f"({', '.join(f'{n} {e}' for e, n in sorted(counts.items()))}); scripts/validate-contracts checks them")


@pytest.fixture(scope="session")
def scenario(played):
    return played.scenario


@pytest.fixture(scope="session")
def system(scenario):
    return scenario.system


checks_passed = 0


def pytest_assertion_pass(item, lineno, orig, expl):
    global checks_passed
    checks_passed += 1


def pytest_terminal_summary(terminalreporter, config):
    if not config.option.collectonly:
        terminalreporter.write_line(f"e2e: {checks_passed} checks passed")
