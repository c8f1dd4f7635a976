"""What the E2B scenarios share: waiting on a condition, never on a clock."""
import time


def eventually(what, check, seconds=60):
    """The first truthy value of check(), asked every 0.2 s for up to `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {seconds} s")
        time.sleep(0.2)
