"""Run Python code in a child, send it SIGINT (Ctrl-C) a while after it starts, and return what it
printed. The child restores Python's SIGINT handler, which a non-interactive parent (CI) may have
ignored, and prints "go" when it is about to start the work."""

import os
import signal
import subprocess
import sys
import time


def interrupted(code: str, after: float, timeout: float = 60) -> tuple[int, str, str]:
    """(exit code, stdout after "go", stderr) of `code`, interrupted `after` seconds into it."""
    prelude = "import signal; signal.signal(signal.SIGINT, signal.default_int_handler); print('go', flush=True); "
    with subprocess.Popen([sys.executable, "-c", prelude + code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=dict(os.environ, PYTHONUNBUFFERED="1")) as p:
        try:
            assert p.stdout.readline().strip() == "go"
            time.sleep(after)
            p.send_signal(signal.SIGINT)
            out, err = p.communicate(timeout=timeout)
        finally:
            p.kill()
    return p.returncode, out, err
