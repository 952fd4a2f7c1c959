"""test_abrupt_peers.py — a destination that vanishes at every step of a transaction cannot
stop the relay or lose a message.

The destination is a raw SMTP server written here (no PIPELINING, so the relay's commands come
one at a time and every step is a distinct point), on 127.0.0.3, reached through --smarthost.
Its first connections each vanish at one point — before the greeting, at EHLO, MAIL, RCPT,
DATA, in the middle of the text, after the final "." before the reply, and at QUIT after the
message was accepted — first with FIN, then with RST (SO_LINGER 0). A connection that ends
before it reaches its point (the relay had no message for it: a host that vanishes before EHLO's
reply is a failed host, and what waited for it is deferred) hands its cut to the next one. Later
connections behave.

Pinned: the daemon survives every cut; each acknowledged message reaches the destination (a
cut after "." may deliver it twice: delivery is at-least-once, never at-most-once) and ends
`delivered` in the delivery log; the daemon's descriptors return to their baseline.
"""

import os
import re
import socket
import struct
import threading
import time

from delivery_peers import delivery_lines, wait_for

HOST = "127.0.0.3"
RST = struct.pack("ii", 1, 0)
CUTS = ["accept", "ehlo", "mail", "rcpt", "data", "mid_text", "after_dot", "quit"]
MARKER_RE = re.compile(rb"X-Abrupt-Id: (\d+)")


class VanishingServer:
    """Each connection takes the next cut not yet made (CUTS with FIN, then CUTS with RST) and
    vanishes there, or gives the cut back when it ends before; once every cut is made, each
    connection is a well-behaved server that records each message."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind((HOST, 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.connections = 0
        self.pending = [(c, False) for c in CUTS] + [(c, True) for c in CUTS]
        self.received = []  # markers of messages this server answered 250 to, in order
        self.cut_done = []  # the cuts carried out
        self.errors = []
        self.stopping = False
        self.thread = threading.Thread(target=self.accept_loop, daemon=True)
        self.thread.start()

    def stop(self):
        self.stopping = True
        self.sock.close()
        self.thread.join(timeout=10)

    def accept_loop(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                cut, rst = self.pending.pop(0) if self.pending else (None, False)
            threading.Thread(target=self.serve, args=(conn, cut, rst), daemon=True).start()

    def vanish(self, conn, cut, rst):
        with self.lock:
            self.cut_done.append((cut, rst))
        if rst:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST)
        conn.close()

    def serve(self, conn, cut, rst):
        try:
            self.serve_one(conn, cut, rst)
        finally:
            with self.lock:
                if cut is not None and (cut, rst) not in self.cut_done:
                    self.pending.insert(0, (cut, rst))  # not reached: the next one makes it

    def serve_one(self, conn, cut, rst):
        conn.settimeout(30)
        f = conn.makefile("rb")
        try:
            if cut == "accept":
                return self.vanish(conn, cut, rst)
            conn.sendall(b"220 vanishing.test ESMTP\r\n")
            for _ in range(100):
                line = f.readline()
                if not line:
                    return conn.close()
                verb = line[:4].upper()
                step = {b"EHLO": "ehlo", b"HELO": "ehlo", b"MAIL": "mail", b"RCPT": "rcpt",
                        b"DATA": "data", b"QUIT": "quit"}.get(verb)
                if step == cut and cut != "quit":
                    return self.vanish(conn, cut, rst)
                if verb == b"EHLO":
                    conn.sendall(b"250-vanishing.test\r\n250 8BITMIME\r\n")
                elif verb == b"DATA":
                    conn.sendall(b"354 go ahead\r\n")
                    text = b""
                    for _ in range(100000):
                        chunk = f.readline()
                        if not chunk:
                            return conn.close()
                        text += chunk
                        if cut == "mid_text" and len(text) > 20:
                            return self.vanish(conn, cut, rst)
                        if chunk == b".\r\n":
                            break
                    m = MARKER_RE.search(text)
                    if cut == "after_dot":
                        if m:  # it has the whole message: the relay cannot know
                            with self.lock:
                                self.received.append(int(m.group(1)))
                        return self.vanish(conn, cut, rst)
                    with self.lock:
                        self.received.append(int(m.group(1)) if m else -1)
                    conn.sendall(b"250 2.0.0 accepted\r\n")
                elif verb == b"QUIT":
                    if cut == "quit":
                        return self.vanish(conn, cut, rst)
                    conn.sendall(b"221 2.0.0 bye\r\n")
                    return conn.close()
                else:
                    conn.sendall(b"250 2.0.0 ok\r\n")
        except OSError as e:
            with self.lock:
                self.errors.append(repr(e))
        finally:
            conn.close()


def sockets(pid):
    return sum(1 for link in fd_links(pid) if "socket:" in link)


def fd_links(pid):
    out = []
    for fd in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        try:
            out.append(f"{fd}->{os.readlink(f'/proc/{pid}/fd/{fd}')}")
        except OSError:
            pass
    return out


def test_destination_vanishing_at_every_step(ringmail_factory, helpers):
    server = VanishingServer()
    try:
        d = ringmail_factory("--smarthost", f"[{HOST}]:{server.port}", "--retry-schedule",
                             "200ms:200ms", "--outbound-tls", "none",
                             "--max-messages-per-connection", "1", "--outbound-idle-ms", "100",
                             delivery=True)
        # Sockets only: the spool's segment files come and go with the queue by design.
        baseline = sockets(d.proc.pid)
        fds0 = fd_links(d.proc.pid)
        ids = {}
        for n in range(6):
            qid, _ = helpers.send_smtplib(
                d, "sender@client.test", [f"rcpt{n}@dest.test"],
                f"Subject: abrupt {n}\r\nX-Abrupt-Id: {n}\r\n\r\nhello {n}\r\n")
            ids[n] = qid

        def all_cut_and_delivered():
            with server.lock:
                return (len(server.cut_done) == 2 * len(CUTS) and
                        set(server.received) >= set(ids))

        wait_for(all_cut_and_delivered, "every cut made and every message delivered",
                 timeout=90)
        assert d.running(), "the daemon died while its destination vanished"

        def delivered_in_log():
            done = {ln["id"] for ln in delivery_lines(d.log_text())
                    if ln["status"] == "delivered"}
            return set(ids.values()) <= done

        wait_for(delivered_in_log, "a delivered line for every message", timeout=30)
        with server.lock:
            received = list(server.received)
        # At-least-once: only a cut after "." may repeat a message, and at most twice here.
        assert -1 not in received
        repeats = {n: received.count(n) for n in ids if received.count(n) > 1}
        assert sum(c - 1 for c in repeats.values()) <= 2, repeats
        try:
            wait_for(lambda: sockets(d.proc.pid) <= baseline, f"sockets back to {baseline}",
                     timeout=30)
        except AssertionError:
            raise AssertionError(f"descriptors at start {fds0}, now {fd_links(d.proc.pid)}")
        # The relay still accepts and delivers.
        qid, _ = helpers.send_smtplib(d, "sender@client.test", ["last@dest.test"],
                                      "Subject: last\r\nX-Abrupt-Id: 99\r\n\r\nlast\r\n")
        wait_for(lambda: 99 in server.received, "a message after the cuts", timeout=30)
    finally:
        server.stop()
