"""test_delivery_crash.py — kill -9 while relaying, three times: every message a client saw
250 for reaches the destination (at least once), none is lost.

Eight client threads send messages with a unique X-Crash-Id to the relay, which relays them
through --smarthost to a capturing SMTP server (aiosmtpd, on 127.0.0.2) that records every id
it receives. The relay is killed with SIGKILL at random moments and restarted on the same
spool; after the load stops, the last life delivers what is left (recovered from the spool
with each recipient's state). Duplicates are allowed (a crash between the destination's 250 and
our status record repeats a delivery); a missing acknowledged message fails the test.
"""

import random
import re
import smtplib
import socket
import threading
import time

from aiosmtpd.controller import Controller

THREADS = 8
KILLS = 3
ID_RE = re.compile(rb"\r\nX-Crash-Id: (\d+-\d+)\r\n")


class Capture:
    """An SMTP destination that records the X-Crash-Id of every message it accepts."""

    def __init__(self):
        self.lock = threading.Lock()
        self.seen = {}

    async def handle_DATA(self, server, session, envelope):
        m = ID_RE.search(envelope.original_content or b"")
        if m:
            with self.lock:
                self.seen[m.group(1).decode()] = self.seen.get(m.group(1).decode(), 0) + 1
        return "250 2.0.0 captured"


def free_port(host):
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def test_kill9_while_relaying_loses_nothing(ringmail_factory, helpers):
    capture = Capture()
    port = free_port("127.0.0.2")
    ctl = Controller(capture, hostname="127.0.0.2", port=port)
    ctl.start()
    try:
        d = ringmail_factory("--smarthost", f"[127.0.0.2]:{port}", "--retry-schedule", "1s:1s",
                             delivery=True)
        acked, lock, stop = [], threading.Lock(), threading.Event()

        def client(t):
            n = 0
            while not stop.is_set():
                try:
                    with smtplib.SMTP("127.0.0.1", d.port, timeout=5) as s:
                        while not stop.is_set():
                            marker = f"{t}-{n}"
                            n += 1
                            msg = (f"Subject: relay crash {marker}\r\nX-Crash-Id: {marker}\r\n"
                                   f"\r\n{'x' * 200}\r\n")
                            s.sendmail("load@example.com", ["sink@example.net"], msg)
                            with lock:
                                acked.append(marker)
                except (smtplib.SMTPException, OSError):
                    pass  # the relay was killed: reconnect (no 250 seen for that one)
                if not stop.is_set():
                    time.sleep(0.05)  # reconnect pacing while the relay restarts, not sync

        threads = [threading.Thread(target=client, args=(t,), daemon=True) for t in range(THREADS)]
        for th in threads:
            th.start()
        rng = random.Random(7)
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.3, 1.2))  # load runs for a random while before the kill
            d.kill9()
            d.start()
        time.sleep(0.5)  # a last stretch of load on the final life
        stop.set()
        for th in threads:
            th.join(timeout=15)
        assert len(acked) > 100, f"only {len(acked)} messages acknowledged"

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with capture.lock:
                missing = [m for m in acked if m not in capture.seen]
            if not missing:
                break
            time.sleep(0.2)  # poll interval, bounded by the deadline
        assert not missing, (f"{len(missing)} of {len(acked)} acknowledged messages never reached "
                             f"the destination, e.g. {missing[:5]}")
    finally:
        ctl.stop()
