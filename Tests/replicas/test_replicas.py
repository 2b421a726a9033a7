"""The whole system as its users deploy it (issue 18): two replicas of every Lethe service and three pdr-reporters,
each service behind a front that does what a load balancer does (scripts/lethe_demo/front.py), while one replica of
each service is killed with SIGKILL at a random moment and restarted, as an orchestrator would. The demo's scenario
runs through it (sign-ins, `closed` and `updated` answers, two PDR cycles) and the tests check what must hold whatever
was killed when: every sign-in answered, every closed account erased, each erasure completed once and acknowledged by
every participant, the audit verifying, every account reported once per cycle and none early, nothing of a closed
account on any replica's disk, and every service back to one active replica (or, partitioned, every replica ready).

oauth-gateway runs one active replica at a time (`ReplicaLease`), each replica on a directory of its own, so the kill
that matters is the active one's: the chaos kills the active replica, and the standby reads the state back from the
gateway's changelog when it takes over (the killed one, restarted, drops its file's state). pdr-reporter's,
erasure-executor's and profile-store's replicas split the partitions, each with its own directory; one of them is
killed, and the others take its partitions over (profile-store's and the executor's from their changelogs). The
console is stateless. The seed is printed (LETHE_REPLICAS_SEED replays a run's choices).

Needs the service binaries (LETHE_DEMO_BIN_DIR, default .build/debug) and starts the dev broker unless
KAFKA_BOOTSTRAP_SERVERS names one. Nothing is skipped: when the system cannot start, every test fails with the reason.
"""
import os
import random
import signal
import sys
import time
from collections import Counter
from datetime import datetime

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                "scripts"))
from lethe_demo.http_client import http  # noqa: E402
from lethe_demo.launcher import Failure, log_as, say  # noqa: E402
from lethe_demo.scenario import Scenario  # noqa: E402
from lethe_demo.system import System  # noqa: E402

REPLICAS = {"profile-store": 2, "erasure-executor": 2, "oauth-gateway": 2, "operator-console": 2, "pdr-reporter": 3}
LEASED = ("oauth-gateway",)
PARTITIONED = ("erasure-executor", "pdr-reporter", "profile-store")
PARTICIPANTS = {"profile-store", "oauth-gateway", "python-example"}


class Chaos:
    """One kill per replicated service, each at a random moment of its phase: oauth-gateway and profile-store while
    users sign in (after a random sign-in), the others while the PDR cycle runs (a random number of seconds into it).
    The killed replica is restarted a second later."""

    def __init__(self, system, seed):
        self.system = system
        self.random = random.Random(seed)
        self.kills = []  # (service, replica name, phase, seconds since the phase started)
        self.sign_in_plan = {}
        self.cycle_plan = {}
        self.cycle_started = None

    def plan(self, users):
        for service in ("oauth-gateway", "profile-store"):
            self.sign_in_plan[service] = self.random.randrange(1, len(users))  # after that many sign-ins
        for service in ("erasure-executor", "pdr-reporter", "operator-console"):
            self.cycle_plan[service] = self.random.uniform(1, self.system.cycle * 0.8)
        say(f"chaos plan: after sign-in {self.sign_in_plan}; seconds into the cycle "
            f"{ {s: round(t, 1) for s, t in self.cycle_plan.items()} }")

    def after_sign_in(self, done):
        for service, after in list(self.sign_in_plan.items()):
            if done == after:
                del self.sign_in_plan[service]
                self.kill(service, "sign-ins", done)

    def while_cycle_runs(self):
        if self.cycle_started is None:
            self.cycle_started = time.monotonic()
        elapsed = time.monotonic() - self.cycle_started
        for service, at in list(self.cycle_plan.items()):
            if elapsed >= at:
                del self.cycle_plan[service]
                self.kill(service, "pdr-cycle", round(elapsed, 1))

    def kill(self, service, phase, when):
        names = [name for name, _ in self.system.instances(service)]
        victim = self.active(service) if service in LEASED else self.random.choice(names)
        say(f"chaos: killing {victim} ({phase}, {when})")
        self.system.kill_and_restart(victim)
        self.kills.append((service, victim, phase, when))

    def active(self, service):
        """The replica whose /health/ready answers 200 (waiting for the lease to settle after an earlier kill)."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready = [name for name, _ in self.system.instances(service) if readiness(self.system, name) == 200]
            if len(ready) == 1:
                return ready[0]
            time.sleep(0.5)
        raise Failure(f"no single active replica of {service} to kill")


def readiness(system, name):
    try:
        return http("GET", system.instance_url(name) + "/health/ready", timeout=6).status
    except Failure:
        return None


class Run:
    def __init__(self, scenario, chaos, not_reported_again):
        self.scenario = scenario
        self.chaos = chaos
        self.not_reported_again = not_reported_again
        self.readiness = {}  # replica name → /health/ready status at the end
        self.probes = {}  # leased service → status of one request through its front after every kill
        self.direct = {}  # replica of a leased service → status of one request sent to it, not through the front


@pytest.fixture(scope="module")
def run():
    log_as("replicas")
    signal.signal(signal.SIGTERM, raise_keyboard_interrupt)  # as Ctrl-C: the finally below stops every process
    seed = int(os.environ.get("LETHE_REPLICAS_SEED") or random.randrange(1 << 30))
    say(f"seed {seed} (LETHE_REPLICAS_SEED={seed} replays these choices)")
    system = System("replicas", replicas=REPLICAS)
    try:
        system.prepare()
        say(f"run folder {system.run_dir}; replicas {REPLICAS}")
        scenario = Scenario(system)
        chaos = Chaos(system, seed)
        signed_in = []

        def after_each_sign_in(user):
            if not signed_in:  # the users exist once the scenario has set up its tenants
                chaos.plan(scenario.users)
            signed_in.append(user)
            chaos.after_sign_in(len(signed_in))

        scenario.sign_in_everyone(after_each_sign_in=after_each_sign_in)
        scenario.close_accounts_and_wait_for_outcomes(while_waiting=chaos.while_cycle_runs)
        while chaos.cycle_plan:  # the cycle's work ended before a planned kill: it still happens, now
            chaos.while_cycle_runs()
            time.sleep(0.5)
        not_reported_again = scenario.wait_second_cycle()
        scenario.collect_after()
        result = Run(scenario, chaos, not_reported_again)
        # One request through each leased service's front after every kill (the scenario's own requests may all have
        # come before its kill): the front tries the replica that answered last first, and must end at the active
        # one — which answers a route that does not exist with 404 (or 401 before routing); a standby forwards it
        # there, or answers 503 while no active replica answers.
        for service in LEASED:
            result.probes[service] = http("GET", system.fronts[service].url + "/v1/replica-run-probe").status
        time.sleep(12)  # a lease settles within one session timeout (6 s) and a rebalance
        for service in REPLICAS:
            for name, _ in system.instances(service):
                result.readiness[name] = readiness(system, name)
        # The same request to every replica of a leased service, as a load balancer without health checks (or a
        # service name resolving to any replica) would send it: the standby answers with the active replica's answer.
        for service in LEASED:
            for name, _ in system.instances(service):
                result.direct[name] = http("GET", system.instance_url(name) + "/v1/replica-run-probe").status
        yield result
    finally:
        system.shutdown()


def test_one_replica_of_every_service_was_killed_and_restarted(run):
    killed = Counter(service for service, *_ in run.chaos.kills)
    assert killed == Counter({service: 1 for service in REPLICAS}), run.chaos.kills


def test_the_fronts_reach_the_active_replica_after_each_kill(run):
    assert all(status in (401, 404) for status in run.probes.values()), run.probes
    # The last replica a front used was the killed active one. Unless the restarted replica won the lease back (a
    # rebalance may give it to either member), the requests after the kill found it down or a standby and were sent
    # on to the other replica.
    fronts = run.scenario.system.fronts
    for service, victim, *_ in run.chaos.kills:
        if service in LEASED and run.readiness[victim] != 200:
            assert fronts[service].retried >= 1, f"{service}: no request passed the killed {victim}"


def test_every_replica_answers_the_standby_through_the_active_one(run):
    assert run.direct and all(status in (401, 404) for status in run.direct.values()), run.direct


def test_every_sign_in_was_answered(run):
    assert run.scenario.sign_ins == len(run.scenario.users)


def test_each_leased_service_has_one_active_replica_and_every_partitioned_replica_is_ready(run):
    for service in LEASED:
        statuses = [run.readiness[name] for name, _ in run.scenario.system.instances(service)]
        assert sorted(statuses) == [200, 503], f"{service}: {statuses}"
    for service in PARTITIONED:
        statuses = [run.readiness[name] for name, _ in run.scenario.system.instances(service)]
        assert statuses == [200] * REPLICAS[service], f"{service}: {statuses}"


def test_every_closed_account_has_one_completed_erasure_acknowledged_by_every_participant(run):
    scenario = run.scenario
    for user in (u for u in scenario.users if u.closed):
        records = [r for r in user.tenant.erasures() if r.get("cause") == "atlassian-closed"
                   and r.get("appId") == user.tenant.app_id]
        assert [r.get("status") for r in records] == ["completed"], f"{user.label}: {records}"
        outcomes = {p.get("participant"): p.get("outcome") for p in records[0].get("participants", [])}
        assert PARTICIPANTS <= set(outcomes), f"{user.label}: {outcomes}"
        assert all(outcome in ("erased", "scrubbed", "disassociated", "nothing-held") for outcome in outcomes.values())


def test_the_audit_verifies_with_one_entry_per_completed_erasure(run):
    audit = run.scenario.audit
    closed = sum(1 for u in run.scenario.users if u.closed)
    assert audit.get("ok") is True, audit
    assert audit.get("entries") == closed, audit


def test_the_updated_profile_was_refreshed(run):
    # wait_outcomes returns only once profile-store serves the new name; here it is read once more through the front
    user = next(u for u in run.scenario.users if u.updated_name)
    answer = http("GET", f"{run.scenario.system.url('profile-store')}/v1/tenants/{user.tenant.id}/profiles/"
                  f"{user.account_id}", headers=user.tenant.auth())
    assert answer.status == 200 and answer.json().get("name") == user.updated_name


def test_every_account_is_reported_once_per_cycle_none_early_and_the_active_ones_again(run):
    scenario = run.scenario
    least = scenario.system.cycle * 0.9
    times = {}
    for call in scenario.calls:
        assert call.get("status") in (200, 204) and 1 <= len(call.get("accounts", [])) <= 90, call
        for account in call["accounts"]:
            times.setdefault((call["clientId"], account["accountId"]), []).append(call["time"])
    held = {(u.tenant.app_id, u.account_id) for u in scenario.users}
    assert held <= set(times), f"never reported: {held - set(times)}"
    assert set(times) <= held, f"reported but not held: {set(times) - held}"
    early = []
    for key, stamps in times.items():
        moments = sorted(time_of(stamp) for stamp in stamps)
        early += [(key, round(b - a, 1)) for a, b in zip(moments, moments[1:]) if b - a < least]
    assert not early, f"reported less than {least:.0f} s apart (twice in a cycle): {early}"
    closed = {(u.tenant.app_id, u.account_id) for u in scenario.users if u.closed}
    assert all(len(times[key]) == 1 for key in closed), {key: times[key] for key in closed}
    assert not run.not_reported_again, f"not reported in the second cycle: {run.not_reported_again}"


def test_nothing_of_a_closed_account_on_any_replicas_disk(run):
    system = run.scenario.system
    closed = [u for u in run.scenario.users if u.closed]
    files = []
    for root, _dirs, names in os.walk(os.path.join(system.run_dir, "data")):
        files += [os.path.join(root, name) for name in names if ".sqlite" in name]
    reporters = {os.path.basename(os.path.dirname(path)) for path in files if "/pdr-reporter-" in path}
    assert len(reporters) == 3, f"expected the three reporters' own files, found {sorted(reporters)}"
    executors = {os.path.basename(os.path.dirname(path)) for path in files if "/erasure-executor-" in path}
    assert len(executors) == 2, f"expected the two executors' own files, found {sorted(executors)}"
    stores = {os.path.basename(os.path.dirname(path)) for path in files if "/profile-store-" in path}
    assert len(stores) == 2, f"expected the two profile-stores' own files, found {sorted(stores)}"
    gateways = {os.path.basename(os.path.dirname(path)) for path in files if "/oauth-gateway-" in path}
    assert len(gateways) == 2, f"expected the two gateways' own files, found {sorted(gateways)}"
    hits = []
    for path in files:
        try:
            with open(path, "rb") as file:
                data = file.read()
        except FileNotFoundError:  # a -wal file goes at a checkpoint
            continue
        for user in closed:
            for label, value in (("accountId", user.account_id), ("name", user.name), ("email", user.email)):
                if value.encode() in data:
                    hits.append(f"{user.label} {label} in {os.path.relpath(path, system.run_dir)}")
    assert not hits, "; ".join(hits)


def time_of(stamp):
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def raise_keyboard_interrupt(_signum, _frame):
    raise KeyboardInterrupt
