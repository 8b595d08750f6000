"""Small helpers shared by test modules."""

import time


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.02):
    """Poll until predicate() is truthy and return its value; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(interval)
