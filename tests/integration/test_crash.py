"""test_crash.py — kill -9 under load, five times, and nothing acknowledged is lost.

Twenty client threads send 1 KiB messages with unique content in a loop and record, at the
moment each 250 is read, the queue id it named and the sha256 of the content sent. The daemon
is killed with SIGKILL at random moments (0.2–1.5 s of load) five times and restarted on the
same spool; the clients reconnect. After a final graceful stop:
  - every acknowledged message is in the spool, once, under its id, with exactly the content
    the client sent (after the relay's Received header);
  - every stored message, acknowledged or not, is whole: its content is exactly one that a
    client sent (no partial or mixed record survives), and `ringmail-spool verify` passes;
  - no two messages share an id across restarts.

The stored bodies are read straight from the segment files at the (segment, offset) the spool
tool reports, and each is checked against the tool's own body_sha256 and body_bytes, so the
tool remains the authority; running the tool once per message would take minutes.
"""

import glob
import hashlib
import mmap
import os
import random
import re
import smtplib
import struct
import threading
import time

THREADS = 20
KILLS = 5
TOTAL_DEADLINE_S = 90
RECORD_MAGIC = 0x31524D52  # "RMR1", spool/record.hpp
END_MAGIC = 0x444E4D52  # "RMND"
MARKER_RE = re.compile(rb"\r\nX-Crash-Id: (\d+-\d+)\r\n")


def content_for(marker):
    h = hashlib.sha256(marker.encode()).hexdigest()
    head = (f"From: load@example.com\r\nTo: sink@example.net\r\nSubject: crash {marker}\r\n"
            f"X-Crash-Id: {marker}\r\n\r\n")
    body = "".join(h[i:] + h[:i] + "\r\n" for i in range(15))
    return (head + body).encode()


class Load:
    def __init__(self, daemon, queued_re):
        self.d = daemon
        self.queued_re = queued_re
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.acked = []  # (qid, marker, sha256 of content, daemon life)
        self.attempted = {}  # marker → sha256 of content
        self.errors = []
        self.seqs = [0] * THREADS  # per thread; survives a session cut short by the kill
        self.threads = [threading.Thread(target=self.run, args=(t,), daemon=True)
                        for t in range(THREADS)]

    def start(self):
        for t in self.threads:
            t.start()

    def join(self):
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)
            assert not t.is_alive(), "a load thread did not finish"

    def run(self, tid):
        for _ in range(1_000_000):
            if self.stop.is_set():
                return
            try:
                s = smtplib.SMTP("127.0.0.1", self.d.port, local_hostname="load.test",
                                 timeout=5)
            except OSError:  # the daemon is down: poll for its return
                self.stop.wait(0.01)
                continue
            try:
                s.ehlo()
                self.session(s, tid)
            except (smtplib.SMTPException, OSError):
                pass  # killed mid-session: reconnect
            except Exception as e:  # a harness bug must fail the test, not vanish
                self.errors.append(repr(e))
                return
            finally:
                try:
                    s.close()
                except OSError:
                    pass

    def session(self, s, tid):
        for _ in range(1_000_000):
            if self.stop.is_set():
                return
            self.seqs[tid] += 1
            marker = f"{tid}-{self.seqs[tid]}"
            content = content_for(marker)
            digest = hashlib.sha256(content).hexdigest()
            with self.lock:
                self.attempted[marker] = digest
            life = self.d.lives
            if s.mail("load@example.com")[0] != 250 or s.rcpt("sink@example.net")[0] != 250:
                return
            code, resp = s.data(content)
            if code != 250:
                return
            m = self.queued_re.search(resp.decode("utf-8", "replace"))
            if not m:
                self.errors.append(f"250 without a queue id: {resp!r}")
                return
            with self.lock:
                self.acked.append((m.group(1), marker, digest, life))
        return


class SegmentReader:
    """Reads a message record at (segment, offset) from the spool's segment files."""

    def __init__(self, spool_dir):
        self.maps = {}
        self.files = []
        for path in glob.glob(os.path.join(spool_dir, "*", "*.seg")):
            if os.path.basename(os.path.dirname(path)) == "quarantine":
                continue
            seq = int(os.path.basename(path)[:-4], 16)
            f = open(path, "rb")
            self.files.append(f)
            if os.fstat(f.fileno()).st_size == 0:
                continue
            self.maps.setdefault(seq, []).append(mmap.mmap(f.fileno(), 0,
                                                           access=mmap.ACCESS_READ))

    def close(self):
        for ms in self.maps.values():
            for m in ms:
                m.close()
        for f in self.files:
            f.close()

    def body(self, entry):
        """The body bytes of `entry`, or None when the record is not where expected."""
        for m in self.maps.get(entry["segment"], []):
            off = entry["offset"]
            if off + 16 > len(m):
                continue
            magic, rtype, _flags, _res, payload_bytes, _crc = struct.unpack_from("<IBBHII", m, off)
            if magic != RECORD_MAGIC or rtype != 2 or off + 16 + payload_bytes > len(m):
                continue
            payload = m[off + 16:off + 16 + payload_bytes]
            (msg_id,) = struct.unpack_from("<Q", payload, 0)
            body_bytes, end = struct.unpack_from("<QI", payload, len(payload) - 12)
            if msg_id != int(entry["id"], 16) or end != END_MAGIC:
                continue
            if body_bytes != entry["body_bytes"] or body_bytes > len(payload) - 12:
                continue
            body = payload[len(payload) - 12 - body_bytes:len(payload) - 12]
            if hashlib.sha256(body).hexdigest() == entry["body_sha256"]:
                return body
        return None


def test_kill9_under_load_loses_nothing_acknowledged(ringmail, helpers):
    t_start = time.monotonic()
    seed = int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    print(f"crash test seed {seed}")
    load = Load(ringmail, helpers.QUEUED_TEXT_RE)
    load.start()
    acked_at_kill = []
    try:
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.2, 1.5))  # load duration before the crash, not a sync
            ringmail.kill9()
            with load.lock:
                acked_at_kill.append(len(load.acked))
            ringmail.start()
        time.sleep(0.5)  # some load on the last life too
    finally:
        load.join()
    ringmail.stop()
    assert not load.errors, load.errors[:5]

    acked = list(load.acked)
    print(f"acked {len(acked)} messages; at each kill: {acked_at_kill}")
    assert len(acked) > 0
    assert len({a[0] for a in acked}) == len(acked), "two 250s named the same queue id"
    assert sum(1 for a in acked if a[3] < KILLS + 1) > 0, "no load before any kill"

    by_id = ringmail.spool_by_id()
    missing = [a for a in acked if a[0] not in by_id]
    assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {missing[:5]}"

    reader = SegmentReader(ringmail.spool_dir)
    try:
        by_marker = {}
        fallbacks = 0
        for qid, e in by_id.items():
            body = reader.body(e)
            if body is None:  # not found on disk where expected: ask the tool
                fallbacks += 1
                body = ringmail.body(qid)
                assert hashlib.sha256(body).hexdigest() == e["body_sha256"], qid
            part = helpers.strip_received(body)
            m = MARKER_RE.search(part)
            assert m, f"stored message {qid} is not one the clients sent: {part[:200]!r}"
            marker = m.group(1).decode()
            assert marker in load.attempted, f"{qid}: unknown marker {marker}"
            assert hashlib.sha256(part).hexdigest() == load.attempted[marker], \
                f"stored message {qid} ({marker}) differs from what was sent (partial?)"
            assert marker not in by_marker, f"{marker} stored twice: {by_marker[marker]} {qid}"
            by_marker[marker] = qid
    finally:
        reader.close()
    print(f"{len(by_id)} stored, {fallbacks} read through the tool instead of the segments")

    for qid, marker, digest, _life in acked:
        assert by_marker.get(marker) == qid, f"acked {marker} as {qid}, stored as " \
            f"{by_marker.get(marker)}"

    # The tool's own body output agrees with what was read from the segments.
    for qid, marker, digest, _life in rng.sample(acked, min(10, len(acked))):
        assert hashlib.sha256(ringmail.client_part(qid)).hexdigest() == digest

    assert ringmail.verify() == 0
    assert time.monotonic() - t_start < TOTAL_DEADLINE_S
