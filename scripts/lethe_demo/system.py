"""The Lethe system as local processes: run folder, ports, broker, every service's environment, start and stop."""
import base64
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime

from .front import Front
from .http_client import http
from .launcher import REPO, Failure, Supervisor, env_int, peak_rss_kib, say

SERVICES = ["atlassian-sandbox", "profile-store", "erasure-executor", "oauth-gateway", "operator-console",
            "pdr-reporter"]
PARTICIPANT = "python-example"
# Services whose replicas each own the partitions their group assigns them, on a data directory of their own.
PARTITIONED = ("pdr-reporter", "erasure-executor", "profile-store")
# Every replica of these has a data directory of its own: the partitioned ones, and oauth-gateway, whose replica that
# becomes active reads its state back from its changelog (one active at a time).
OWN_DATA = PARTITIONED + ("oauth-gateway",)
# GATEWAY_INTERNAL is the gateway's internal listener (reporting-token API, metrics): a port, not a service.
GATEWAY_INTERNAL = "oauth-gateway-internal"
DEFAULT_PORTS = {"oauth-gateway": 8080, "profile-store": 8081, "pdr-reporter": 8082, "erasure-executor": 8083,
                 "operator-console": 8084, "atlassian-sandbox": 8090, GATEWAY_INTERNAL: 9080}
PORT_OFFSETS = {"oauth-gateway": 0, "profile-store": 1, "pdr-reporter": 2, "erasure-executor": 3,
                "operator-console": 4, "atlassian-sandbox": 10, GATEWAY_INTERNAL: 1000}
PORT_ENV = {"oauth-gateway": "LETHE_DEMO_GATEWAY_PORT", "profile-store": "LETHE_DEMO_PROFILE_STORE_PORT",
            "pdr-reporter": "LETHE_DEMO_REPORTER_PORT", "erasure-executor": "LETHE_DEMO_EXECUTOR_PORT",
            "operator-console": "LETHE_DEMO_CONSOLE_PORT",
            "atlassian-sandbox": "LETHE_DEMO_SANDBOX_PORT", GATEWAY_INTERNAL: "LETHE_DEMO_GATEWAY_INTERNAL_PORT"}


class System:
    """mode "demo" or "run": ports from the environment, run folder demo/; "e2e" (the end-to-end suite): free ports,
    run folder demo-e2e/, so a suite run and a demo can run side by side; "replicas" (Tests/replicas): as e2e, in
    demo-replicas/, with `replicas` naming how many of a service to run (service → count).

    A service run as several replicas gets one process per replica (`<service>-<n>`, each on its own ports) and a
    `Front` in front of them whose URL is the service's URL for everyone else, as a load balancer's would be. The
    replicas of a service that runs one active replica at a time (the lease) share its data directory, as compose's
    replicas share a named volume; pdr-reporter's, erasure-executor's and profile-store's replicas, which split the
    partitions, each get their own."""

    def __init__(self, mode, replicas=None):
        self.mode = mode
        run_root = os.environ.get("LETHE_RUN_DIR", "").strip() or os.path.join(REPO, ".run")
        self.run_root = os.path.abspath(run_root)
        self.run_dir = os.path.join(self.run_root, {"e2e": "demo-e2e", "replicas": "demo-replicas"}.get(mode, "demo"))
        self.replicas = {service: count for service, count in (replicas or {}).items() if count > 1}
        self.instance_ports = {}  # instance name → (public port, internal port or None)
        self.instance_of = {}  # instance name → (service, replica number or None)
        self.fronts = {}
        self.bin_dir = os.path.abspath(os.environ.get("LETHE_DEMO_BIN_DIR", "").strip()
                                       or os.path.join(REPO, ".build", "debug"))
        self.cycle = env_int("LETHE_DEMO_CYCLE_SECONDS", 30, 5, 3600)
        self.log_level = os.environ.get("LETHE_DEMO_LOG_LEVEL", "").strip() or "info"
        self.supervisor = Supervisor(self.run_dir, env_int("LETHE_DEMO_STOP_TIMEOUT", 10, 1, 600))
        self.lock_file = None
        self.broker = None
        self.broker_started = False
        self.namespace = f"demo-{datetime.now().strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(3)}"
        self.admin_token = "adm-" + secrets.token_urlsafe(24)
        self.internal_token = "int-" + secrets.token_urlsafe(24)
        self.audit_key = secrets.token_urlsafe(40)
        self.master_key = base64.b64encode(os.urandom(32)).decode()
        self.shared_app = {"clientId": "lethe-shared-test-app", "clientSecret": "shs-" + secrets.token_urlsafe(18)}
        self.ports = {}
        self.processes = {}
        self.peak_rss = {"idle": {}, "loaded": {}}  # KiB per service (LETHE_DEMO_MEMORY_REPORT)

    # -- URLs
    def url(self, service):
        return f"http://127.0.0.1:{self.ports[service]}"

    @property
    def gateway(self):
        return self.url("oauth-gateway")

    @property
    def gateway_internal(self):
        return self.url(GATEWAY_INTERNAL)

    @property
    def sandbox(self):
        return self.url("atlassian-sandbox")

    @property
    def callback_url(self):
        return self.gateway + "/v1/signin/atlassian/callback"

    def instances(self, service):
        """The processes of a service: [(name, replica number)], one with number None when it is not replicated."""
        count = self.replicas.get(service, 1)
        if count == 1:
            return [(service, None)]
        return [(f"{service}-{number}", number) for number in range(1, count + 1)]

    def instance_url(self, name):
        return f"http://127.0.0.1:{self.instance_ports[name][0]}"

    def data_dir(self, service):
        path = os.path.join(self.run_dir, "data", service)
        os.makedirs(path, exist_ok=True)
        return path

    # -- set-up
    def prepare(self):
        os.makedirs(self.run_root, exist_ok=True)
        lock_path = self.run_dir + ".lock"
        self.lock_file = open(lock_path, "w")
        try:
            fcntl.flock(self.lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise Failure(f"another lethe-demo is using {self.run_dir} (lock {lock_path}); stop it first")
        shutil.rmtree(self.run_dir, ignore_errors=True)
        os.makedirs(os.path.join(self.run_dir, "logs"))
        os.makedirs(os.path.join(self.run_dir, "data"))
        missing = [name for name in SERVICES if not os.access(os.path.join(self.bin_dir, name), os.X_OK)]
        if missing:
            raise Failure(f"missing binaries in {self.bin_dir}: {', '.join(missing)} "
                          f"(build them first: swift build --product <name>)")
        self.choose_ports()

    def choose_ports(self):
        if self.mode in ("e2e", "replicas"):
            sockets = []
            for service in DEFAULT_PORTS:
                sock = socket.socket()
                sock.bind(("127.0.0.1", 0))
                sockets.append(sock)
                self.ports[service] = sock.getsockname()[1]
            for service in self.replicas:
                for name, _ in self.instances(service):
                    ports = [self.free_port(), self.free_port() if service == "oauth-gateway" else None]
                    self.instance_ports[name] = tuple(ports)
                self.add_front(service)
            for sock in sockets:
                sock.close()
            return
        base = env_int("LETHE_DEMO_PORT_BASE", 0, 1, 65525) if os.environ.get("LETHE_DEMO_PORT_BASE") else None
        for service, default in DEFAULT_PORTS.items():
            port = min(base + PORT_OFFSETS[service], 65535) if base else default
            self.ports[service] = env_int(PORT_ENV[service], port)
        if len(set(self.ports.values())) != len(self.ports):
            raise Failure(f"ports must differ: {self.ports}")
        for service, port in self.ports.items():
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind: TIME_WAIT is no clash
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                raise Failure(f"port {port} ({service}) is in use — is `make run` already running? "
                              f"Set LETHE_DEMO_PORT_BASE (or {PORT_ENV[service]}) to use other ports")
            finally:
                sock.close()

    @staticmethod
    def free_port():
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]

    def add_front(self, service):
        names = [name for name, _ in self.instances(service)]
        front = Front(service, lambda: [self.instance_url(name) for name in names])
        self.fronts[service] = front
        self.ports[service] = front.port
        if service == "oauth-gateway":  # pdr-reporter reaches the internal listener (reporting tokens) the same way
            internal = Front(GATEWAY_INTERNAL, lambda: [f"http://127.0.0.1:{self.instance_ports[name][1]}"
                                                        for name in names])
            self.fronts[GATEWAY_INTERNAL] = internal
            self.ports[GATEWAY_INTERNAL] = internal.port

    def start_broker(self):
        given = os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "").strip()
        if given:
            self.broker = given
            say(f"Kafka: using KAFKA_BOOTSTRAP_SERVERS={given}")
            return
        env = dict(os.environ, LETHE_RUN_DIR=self.run_root)
        script = os.path.join(REPO, "scripts", "dev-broker")
        say(f"Kafka: KAFKA_BOOTSTRAP_SERVERS is unset; scripts/dev-broker start (LETHE_RUN_DIR={self.run_root})")
        # `start` reuses a running broker and says so; it serialises with other callers under its own lock, so
        # asking it (rather than `status` first) cannot mistake someone else's broker for ours.
        self.broker_started = True  # from here on, `stop` is ours to call even if start fails half-way
        started = subprocess.run([script, "start"], env=env, capture_output=True, text=True)
        if "already running" in started.stderr:
            self.broker_started = False
        if started.returncode != 0 or not started.stdout.strip():
            raise Failure(f"scripts/dev-broker start failed (status {started.returncode}):\n{started.stderr[-2000:]}")
        self.broker = started.stdout.strip().splitlines()[-1]
        if self.broker_started:
            say(f"Kafka: started the dev broker at {self.broker} (logs in {self.run_root}/dev-broker/)")
        else:
            say(f"Kafka: using the dev broker already running at {self.broker} (it stays running)")

    def stop_broker(self):
        if not self.broker_started:
            return
        self.broker_started = False
        env = dict(os.environ, LETHE_RUN_DIR=self.run_root)
        result = subprocess.run([os.path.join(REPO, "scripts", "dev-broker"), "stop"], env=env,
                                capture_output=True, text=True)
        if result.returncode == 0:
            say("Kafka: dev broker stopped")
        else:
            say(f"warning: scripts/dev-broker stop failed: {result.stderr.strip()[-500:]}")

    # -- service environments
    def base_env(self, service):
        env = {key: value for key, value in os.environ.items()
               if not key.startswith(("LETHE_", "PDR_", "ERASURE_", "SANDBOX_", "ATLASSIAN_", "HTTP_", "KAFKA_",
                                      "PROFILE_STORE_", "GATEWAY_", "PARTICIPANT_"))}
        env.update(LOG_LEVEL=self.log_level, HTTP_HOST="127.0.0.1")
        if service in self.ports:
            env["HTTP_PORT"] = str(self.ports[service])
        if service != "atlassian-sandbox":
            env.update(KAFKA_BOOTSTRAP_SERVERS=self.broker, LETHE_TOPIC_NAMESPACE=self.namespace)
        return env

    def service_env(self, service, number=None):
        env = self.service_env_shared(service)
        if number is not None:  # one replica of several: its own ports, and its own data directory
            name = f"{service}-{number}"
            env["HTTP_PORT"] = str(self.instance_ports[name][0])
            if self.instance_ports[name][1]:
                env["HTTP_INTERNAL_PORT"] = str(self.instance_ports[name][1])
            if service in OWN_DATA:
                env["LETHE_DATA_DIR"] = self.data_dir(name)
        return env

    def service_env_shared(self, service):
        env = self.base_env(service)
        if service == "atlassian-sandbox":
            env.update(SANDBOX_CYCLE_PERIOD_SECONDS=str(self.cycle))
            return env
        env.update(LETHE_DATA_DIR=self.data_dir(service), LETHE_GATEWAY_URL=self.gateway)
        if service == "oauth-gateway":
            env.update(ATLASSIAN_AUTH_URL=self.sandbox, ATLASSIAN_API_URL=self.sandbox,
                       LETHE_ADMIN_TOKEN=self.admin_token, LETHE_INTERNAL_TOKEN=self.internal_token,
                       LETHE_MASTER_KEY=self.master_key, HTTP_INTERNAL_PORT=str(self.ports[GATEWAY_INTERNAL]),
                       LETHE_SHARED_APP_CLIENT_ID=self.shared_app["clientId"],
                       LETHE_SHARED_APP_CLIENT_SECRET=self.shared_app["clientSecret"])
            if self.mode == "e2e":  # the suite's Shared Signals receiver listens on 127.0.0.1, over http
                env.update(GATEWAY_SSF_ALLOW_PRIVATE_ENDPOINTS="true")
        elif service == "pdr-reporter":
            env.update(ATLASSIAN_AUTH_URL=self.sandbox, ATLASSIAN_API_URL=self.sandbox,
                       LETHE_ADMIN_TOKEN=self.admin_token, LETHE_INTERNAL_TOKEN=self.internal_token,
                       LETHE_GATEWAY_INTERNAL_URL=self.gateway_internal, PDR_CYCLE_SECONDS=str(self.cycle), PDR_ALLOW_SHORT_CYCLE="1")
        elif service == "erasure-executor":
            env.update(LETHE_ADMIN_TOKEN=self.admin_token, LETHE_AUDIT_KEY=self.audit_key,
                       ERASURE_RESEND_SECONDS="10")
            if self.mode == "e2e":  # one `failed` puts an erasure in needs-attention: the console's Retry is tested
                env.update(ERASURE_MAX_FAILED_ATTEMPTS="1")
        elif service == "operator-console":
            reporters = [self.instance_url(name) if number else self.url(name)
                         for name, number in self.instances("pdr-reporter")]
            env.update(LETHE_ADMIN_TOKEN=self.admin_token, LETHE_EXECUTOR_URL=self.url("erasure-executor"),
                       LETHE_REPORTER_URLS=",".join(reporters))
        return env

    def start_services(self, names):
        for service in names:
            for name, number in self.instances(service):
                self.start_instance(name, service, number)
        self.wait_ready(names)
        for service in names:  # every replica alive and answering (a standby is live, not ready)
            for name, number in self.instances(service):
                if number is not None:
                    self.wait_live(name)
        if os.environ.get("LETHE_DEMO_MEMORY_REPORT"):
            time.sleep(1)
            for service in names:
                for name, _ in self.instances(service):
                    self.peak_rss["idle"][name] = peak_rss_kib(self.processes[name].pid)

    def start_instance(self, name, service, number):
        self.processes[name] = self.supervisor.start(
            name, [os.path.join(self.bin_dir, service)], self.service_env(service, number))
        self.instance_of[name] = (service, number)
        where = self.instance_url(name) if number is not None else self.url(service)
        say(f"started {name} (pid {self.processes[name].pid}) on {where}")

    def kill_and_restart(self, name, down_seconds=1.0):
        """SIGKILL, as a crash or an OOM kill, then a new process with the same ports and data after `down_seconds`,
        as an orchestrator's restart policy would. Returns when the new process answers /health/live."""
        child = self.processes[name]
        child.signal(signal.SIGKILL)
        child.process.wait(10)
        self.supervisor.stop(child)  # reaped: only forgets it
        say(f"killed {name} (pid {child.pid}) with SIGKILL")
        time.sleep(down_seconds)
        service, number = self.instance_of[name]
        self.start_instance(name, service, number)
        self.wait_live(name)

    def wait_live(self, name, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            self.supervisor.check_alive()
            try:
                if http("GET", self.instance_url(name) + "/health/live", timeout=6).status == 200:
                    return
            except Failure:
                pass
            if time.monotonic() > deadline:
                raise Failure(f"{name} not live after {timeout} s:\n{self.processes[name].tail()}")
            time.sleep(0.3)

    def restart(self, name):
        """Stops the service (SIGTERM, as an orchestrator would) and starts it again on the same port and data."""
        self.supervisor.stop(self.processes[name])
        self.processes[name] = self.supervisor.start(
            name, [os.path.join(self.bin_dir, name)], self.service_env(name))
        say(f"restarted {name} (pid {self.processes[name].pid})")
        self.wait_ready([name])

    def wait_ready(self, names, timeout=120):
        pending = set(names)
        deadline = time.monotonic() + timeout
        last = {}
        while pending:
            self.supervisor.check_alive()
            for name in sorted(pending):
                try:
                    answer = http("GET", self.url(name) + "/health/ready", timeout=6)
                except Failure as error:
                    last[name] = str(error)
                    continue
                if answer.status == 200:
                    pending.discard(name)
                    say(f"{name} ready")
                else:
                    last[name] = answer.brief()
            if pending and time.monotonic() > deadline:
                details = "; ".join(f"{name}: {last.get(name, 'no answer')}" for name in sorted(pending))
                raise Failure(f"not ready after {timeout} s: {details}")
            if pending:
                time.sleep(0.3)

    def start_participant(self, timeout=60):
        env = self.base_env(PARTICIPANT)
        env.update(PARTICIPANT_NAME=PARTICIPANT, PARTICIPANT_DB=self.participant_db, LOG_LEVEL="INFO",
                   PYTHONUNBUFFERED="1")
        child = self.supervisor.start(
            "python-participant", [sys.executable, "-u", os.path.join(REPO, "examples", "python-participant",
                                                                     "participant.py")], env)
        self.processes["python-participant"] = child
        say(f"started python-participant (pid {child.pid}) as {PARTICIPANT}")
        deadline = time.monotonic() + timeout
        while True:
            self.supervisor.check_alive()
            with open(child.log_path, "rb") as file:
                if f"python-participant {PARTICIPANT} ready".encode() in file.read():
                    say(f"python-participant declared itself and is consuming erasure commands")
                    return
            if time.monotonic() > deadline:
                raise Failure(f"python-participant not ready after {timeout} s:\n{child.tail()}")
            time.sleep(0.2)

    @property
    def participant_db(self):
        return os.path.join(self.data_dir("python-participant"), "python-participant.sqlite")

    def start_all(self, with_reporter):
        self.start_broker()
        first = ["atlassian-sandbox", "profile-store", "erasure-executor", "oauth-gateway", "operator-console"]
        self.start_services(first)
        self.start_participant()
        if with_reporter:
            self.start_services(["pdr-reporter"])

    def shutdown(self):
        report = os.environ.get("LETHE_DEMO_MEMORY_REPORT")
        if report and self.peak_rss["idle"]:
            for child in self.supervisor.children:
                if child.alive():
                    self.peak_rss["loaded"][child.name] = peak_rss_kib(child.pid)
            with open(report, "w") as file:
                json.dump(self.peak_rss, file, indent=2)
        if self.supervisor.children:
            say("stopping " + ", ".join(child.name for child in reversed(self.supervisor.children)))
        self.supervisor.stop_all()
        for front in self.fronts.values():
            front.close()
        self.fronts = {}
        self.stop_broker()
        if self.lock_file:
            self.lock_file.close()
            self.lock_file = None
