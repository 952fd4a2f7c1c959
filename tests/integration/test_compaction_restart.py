"""test_compaction_restart.py — a spool segment keeps its age across restarts.

Compaction copies the live messages of a segment forward once the segment is older than
--compact-after, so that old segments can be deleted. If a segment's age counted from each
start of the daemon, a relay restarted more often than --compact-after (a crash loop, an
operator's restarts) would never compact, and its spool would grow with every restart. Here a
segment that is already older than --compact-after when the daemon starts is compacted (its
deferred messages copied forward, the file deleted) within moments of the start, not
--compact-after later; the messages stay queued with their state.
"""

import glob
import os
import time

from conftest import send_smtplib
from delivery_peers import wait_for, free_port_on

COMPACT_AFTER_S = 8
# Without segment ages kept, the first compaction comes COMPACT_AFTER_S after the start.
COMPACTED_WITHIN_S = COMPACT_AFTER_S / 2


def segment_files(d):
    return set(glob.glob(os.path.join(d.spool_dir, "core-*", "*.seg")))


def test_segment_older_than_compact_after_is_compacted_at_start(ringmail_factory):
    # Nothing listens there: every attempt is deferred ("connection refused"), and the next
    # attempt is an hour away, so the messages stay live in their segment.
    host, port = "127.0.0.2", free_port_on(["127.0.0.2"])
    d = ringmail_factory("--threads", "1", "--smarthost", f"[{host}]:{port}", "--retry-schedule",
                         "1h:1h", "--compact-after", f"{COMPACT_AFTER_S}s", delivery=True)
    made = time.time()
    ids = [send_smtplib(d, "a@example.com", ["b@example.net"], f"Subject: {i}\r\n\r\nhi\r\n")[0]
           for i in range(3)]

    def deferred():
        by_id = d.spool_by_id()
        return all(i in by_id and by_id[i]["rcpt_states"][0]["state"] == "deferred" for i in ids)

    wait_for(deferred, "the three messages deferred")
    d.stop()
    old = segment_files(d)
    assert old, "no segment in the spool"

    # The segments were made before `made`: once COMPACT_AFTER_S has passed since, they are
    # due for compaction (waiting for an age, not synchronising with the daemon).
    wait_for(lambda: time.time() >= made + COMPACT_AFTER_S + 1, "the segments to age",
             timeout=COMPACT_AFTER_S + 5)
    d.start()
    ready = time.monotonic()
    wait_for(lambda: not (segment_files(d) & old), f"segments {sorted(old)} compacted away",
             timeout=COMPACT_AFTER_S * 3)
    took = time.monotonic() - ready
    assert took < COMPACTED_WITHIN_S, (
        f"the old segments went {took:.1f} s after the start: their age was not kept "
        f"(--compact-after {COMPACT_AFTER_S}s)")
    # Copied forward, not lost: still queued, still deferred, in the new segment.
    assert deferred(), d.spool_json()
