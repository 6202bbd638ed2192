"""A real Mosquitto broker on a free loopback port, for the tests, ``make demo`` and ``make bench-device``.

Pure standard library, so the Pi-like test environment (no TensorFlow) imports it too. The
broker is the machine's own ``mosquitto`` binary (Debian package ``mosquitto``), started with a
config file in a working folder of the caller's choosing; ``start``/``stop``/``kill`` are
separate so fault tests can take the broker away mid-run and bring it back on the same port.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

#: Where Debian and a source build put the binary; ``/usr/sbin`` is often not on a user's PATH.
SBIN_PATHS = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")
INSTALL_HINT = "mosquitto is not installed (apt-get install -y mosquitto)"


def find_mosquitto() -> str | None:
    """The path of the ``mosquitto`` binary, or None when it is not installed."""
    return shutil.which("mosquitto") or next((p for p in SBIN_PATHS if Path(p).exists()), None)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float, alive=lambda: True) -> bool:
    """True once something accepts connections on ``host:port``; False after ``timeout`` s or once
    ``alive()`` says the process that should listen is gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


class Broker:
    """One Mosquitto process: ``Broker(folder).start()`` ... ``stop()``.

    ``extra_conf`` is appended to the generated config (persistence, password files, TLS
    listeners); the broker's output goes to ``folder/mosquitto.log``.
    """

    def __init__(self, workdir: Path, port: int | None = None, extra_conf: str = ""):
        self.binary = find_mosquitto()
        if self.binary is None:
            raise RuntimeError(INSTALL_HINT)
        self.host = "127.0.0.1"
        self.port = port or free_port(self.host)
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.conf = self.workdir / "mosquitto.conf"
        self.log = self.workdir / "mosquitto.log"
        # Started as root (CI), mosquitto drops to the user "mosquitto", which cannot write its
        # persistence store into our (root-owned, 0700) folders: a restarted broker then forgot every
        # session, and a test of "no event lost over a broker restart" raced the subscriber's
        # reconnect. A broker of our own keeps the user that started it.
        keep_user = "user root\n" if os.geteuid() == 0 else ""
        self.conf.write_text(
            f"listener {self.port} {self.host}\nallow_anonymous true\npersistence false\n{keep_user}{extra_conf}\n"
        )
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> Broker:
        with open(self.log, "ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=log, stderr=subprocess.STDOUT)
        proc = self.proc
        if wait_for_port(self.host, self.port, timeout, alive=lambda: proc.poll() is None):
            return self
        if proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited at start: {self.log.read_text(errors='replace')}")
        self.kill()
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {timeout}s")

    def stop(self) -> None:
        """Terminate (clean shutdown: a persistent broker writes its store), kill if it hangs."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def kill(self) -> None:
        """SIGKILL: the broker dies as in a power cut."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
