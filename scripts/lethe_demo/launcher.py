"""Output, failures and child processes: what every lethe-demo mode and the end-to-end suite need to run services."""
import ctypes
import errno
import os
import signal
import subprocess
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))


# ------------------------------------------------------------------------------------------------------------------
# Output and failures

class Failure(Exception):
    """A step failed, or the system could not start; the message says which and why."""


class Interrupted(Exception):
    """SIGINT / SIGTERM / SIGHUP arrived."""


T0 = time.monotonic()
_prefix = "demo"


def log_as(prefix):
    """Progress lines start with `prefix:` (the mode: demo, run, e2e)."""
    global _prefix
    _prefix = prefix


def say(message):
    print(f"{_prefix}: [{time.monotonic() - T0:6.1f}s] {message}", flush=True)


def plain(message=""):
    print(message, flush=True)


def env_int(name, default, low=1, high=65535):
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise Failure(f"{name} must be an integer, got {raw!r}")
    if not low <= value <= high:
        raise Failure(f"{name} must be within {low}…{high}, got {value}")
    return value


# ------------------------------------------------------------------------------------------------------------------
# Processes

def peak_rss_kib(pid):
    """VmHWM (peak resident set) of a process, in KiB; 0 when it cannot be read."""
    try:
        with open(f"/proc/{pid}/status") as file:
            for line in file:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _parent_death_signal():
    """Child side, before exec: own session (a terminal Ctrl-C reaches only this script, which stops the children in
    order) and SIGTERM when this script dies without cleaning up (e.g. kill -9)."""
    os.setsid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Child:
    def __init__(self, name, argv, env, log_path, cwd):
        self.name = name
        self.log_path = log_path
        self.log = open(log_path, "ab")
        deadline = time.monotonic() + 120
        while True:
            try:
                self.process = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=self.log,
                                                stderr=subprocess.STDOUT, preexec_fn=_parent_death_signal)
                break
            except OSError as error:  # ETXTBSY: the binary is being linked right now (a build is running)
                if error.errno != errno.ETXTBSY or time.monotonic() > deadline:
                    self.log.close()
                    raise Failure(f"cannot start {name} ({argv[0]}): {error}")
                time.sleep(1)
        self.pid = self.process.pid

    def alive(self):
        return self.process.poll() is None

    def tail(self, lines=15):
        try:
            with open(self.log_path, "rb") as file:
                text = file.read().decode("utf-8", "replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join("    " + line for line in text[-lines:])

    def signal(self, sig):
        """Signals the child's own process group (its pid: it was started in a session of its own), only while the
        child has not been reaped, so a recycled pid is never signalled."""
        if self.process.poll() is None:
            try:
                os.killpg(self.pid, sig)
            except ProcessLookupError:
                pass


class Supervisor:
    def __init__(self, run_dir, stop_timeout):
        self.run_dir = run_dir
        self.stop_timeout = stop_timeout
        self.children = []
        self.hurry = False

    def start(self, name, argv, env, cwd=REPO):
        log_path = os.path.join(self.run_dir, "logs", f"{name}.log")
        child = Child(name, argv, env, log_path, cwd)
        self.children.append(child)
        return child

    def check_alive(self):
        for child in self.children:
            if not child.alive():
                raise Failure(f"{child.name} exited with status {child.process.returncode}; "
                              f"last lines of {child.log_path}:\n{child.tail()}")

    def stop(self, child):
        """SIGTERM, up to the stop timeout (cut short by a second Ctrl-C), then SIGKILL."""
        started = time.monotonic()
        if child.alive():
            child.signal(signal.SIGTERM)
            deadline = started + self.stop_timeout
            while child.alive() and time.monotonic() < (min(deadline, started + 1) if self.hurry else deadline):
                time.sleep(0.05)
            if child.alive():
                say(f"{child.name} (pid {child.pid}) still running after SIGTERM; sending SIGKILL")
                child.signal(signal.SIGKILL)
                try:
                    child.process.wait(5)
                except subprocess.TimeoutExpired:
                    say(f"warning: {child.name} (pid {child.pid}) did not exit after SIGKILL")
            elif time.monotonic() - started > 2:
                say(f"{child.name} took {time.monotonic() - started:.1f} s to stop")
        child.log.close()
        if child in self.children:
            self.children.remove(child)

    def stop_all(self):
        """Stops every child in reverse start order (dependents first)."""
        for child in list(reversed(self.children)):
            self.stop(child)


