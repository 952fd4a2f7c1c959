"""test_metrics.py — /metrics, scraped by a real Prometheus and checked by promtool.

The relay runs with --metrics-listen and relays through --smarthost to a capturing SMTP server;
a Prometheus server (Debian's, on loopback, its own data directory) scrapes it every second,
and the test asks Prometheus's query API for the values: messages accepted, recipients
delivered, the end-of-data→reply histogram's count. `promtool check metrics` lints the
exposition itself.
"""

import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request

import pytest
from aiosmtpd.controller import Controller

from conftest import send_smtplib
from delivery_peers import end_process, free_port_on, wait_for

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
MESSAGES = 7


class Capture:
    def __init__(self):
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        return "250 2.0.0 captured"


def scrape(port, path="/metrics"):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        return r.status, r.headers.get("Content-Type"), r.read().decode()


def value(text, name, labels=""):
    m = re.search(rf"^{re.escape(name)}{re.escape('{' + labels + '}' if labels else '')} (\S+)$",
                  text, re.M)
    return None if m is None else float(m.group(1))


@pytest.fixture
def relay(ringmail_factory):
    capture = Capture()
    smtp_port = free_port_on(["127.0.0.2"])
    ctl = Controller(capture, hostname="127.0.0.2", port=smtp_port)
    ctl.start()
    metrics_port = free_port_on(["127.0.0.1"])
    d = ringmail_factory("--smarthost", f"[127.0.0.2]:{smtp_port}", "--metrics-listen",
                         f"127.0.0.1:{metrics_port}", delivery=True)
    yield d, metrics_port, capture
    ctl.stop()


def test_exposition_counts_and_lints(relay):
    d, port, capture = relay
    for i in range(MESSAGES):
        send_smtplib(d, "a@example.com", ["b@example.net"], f"Subject: {i}\r\n\r\nhi\r\n")
    wait_for(lambda: capture.count >= MESSAGES, "the messages delivered")

    def settled():
        text = scrape(port)[2]
        ok = (value(text, "ringmail_messages_accepted_total") == MESSAGES and
              value(text, "ringmail_delivery_recipients_total", 'outcome="delivered"') == MESSAGES)
        return ok and text

    text = wait_for(settled, "the counters to show the messages (published each 100 ms)")
    status, ctype, _ = scrape(port)
    assert status == 200 and ctype.startswith("text/plain; version=0.0.4")
    assert value(text, "ringmail_end_of_data_to_reply_seconds_count") == MESSAGES
    assert value(text, "ringmail_spool_commit_duration_seconds_count") >= 1
    assert value(text, "ringmail_end_of_data_to_reply_seconds_bucket", 'le="+Inf"') == MESSAGES
    assert value(text, "ringmail_outbound_transactions_total") >= 1
    assert value(text, "ringmail_connections_accepted_total") >= MESSAGES
    assert value(text, "ringmail_queue_messages", 'state="deferred"') == 0
    assert value(text, "ringmail_reactor_seconds_total", 'core="0",state="busy"') > 0
    # Every name follows the conventions promtool checks (units, _total on counters, help).
    assert PROMTOOL, "promtool comes with Debian's prometheus package (tools/install-deps.sh)"
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "" and r.stderr.strip() == "", \
        r.stdout + r.stderr


def test_other_paths_and_methods(relay):
    _, port, _ = relay
    with pytest.raises(urllib.error.HTTPError) as e:
        scrape(port, "/")
    assert e.value.code == 404
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", data=b"x", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=5)
    assert e.value.code == 405


def test_real_prometheus_scrapes_it(relay, tmp_path):
    d, port, capture = relay
    assert PROMETHEUS, "Debian's prometheus package is installed by tools/install-deps.sh"
    web = free_port_on(["127.0.0.1"])
    cfg = tmp_path / "prometheus.yml"
    cfg.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                   "scrape_configs:\n  - job_name: ringmail\n    static_configs:\n"
                   f"      - targets: ['127.0.0.1:{port}']\n")
    log = open(tmp_path / "prometheus.log", "wb")
    prom = subprocess.Popen([PROMETHEUS, f"--config.file={cfg}",
                             f"--storage.tsdb.path={tmp_path / 'data'}",
                             f"--web.listen-address=127.0.0.1:{web}"],
                            stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        for i in range(MESSAGES):
            send_smtplib(d, "a@example.com", ["b@example.net"], f"Subject: {i}\r\n\r\nhi\r\n")
        wait_for(lambda: capture.count >= MESSAGES, "the messages delivered")

        def query(expr):
            url = f"http://127.0.0.1:{web}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
            try:
                with urllib.request.urlopen(url, timeout=5) as r:
                    res = json.load(r)["data"]["result"]
            except (OSError, ValueError, KeyError):
                return None  # Prometheus still starting
            return float(res[0]["value"][1]) if res else None

        wait_for(lambda: query("up{job='ringmail'}") == 1, "Prometheus to scrape ringmail",
                 timeout=60)
        wait_for(lambda: query("ringmail_messages_accepted_total") == MESSAGES,
                 "Prometheus to see the accepted messages", timeout=60)
        wait_for(lambda: query('ringmail_delivery_recipients_total{outcome="delivered"}')
                 == MESSAGES, "Prometheus to see the deliveries", timeout=60)
        assert query("ringmail_end_of_data_to_reply_seconds_count") == MESSAGES
        # A histogram quantile over the scraped buckets: a number, not NaN.
        q = query("histogram_quantile(0.99, ringmail_end_of_data_to_reply_seconds_bucket)")
        assert q is not None and q > 0
    finally:
        end_process(prom)
