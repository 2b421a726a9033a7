"""The broker the example participant's tests run against."""
import os
import subprocess

import pytest

from harness import REPO


@pytest.fixture(scope="session")
def bootstrap():
    """KAFKA_BOOTSTRAP_SERVERS, or the dev broker: a running one is reused; one started here is stopped after."""
    address = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if address:
        yield address
        return
    broker = str(REPO / "scripts" / "dev-broker")
    already_running = subprocess.run([broker, "status"], capture_output=True).returncode == 0
    result = subprocess.run([broker, "start"], capture_output=True, text=True)
    assert result.returncode == 0, f"scripts/dev-broker start failed: {result.stderr}"
    yield result.stdout.strip().splitlines()[-1]
    if not already_running:
        subprocess.run([broker, "stop"], check=True)
