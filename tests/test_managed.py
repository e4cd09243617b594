"""Chapter 11's promises: TLS on the local server and what each of mysqlclient's TLS arguments
checks; a server that requires TLS; the relay's lifetime cuts, and a max_age that stays ahead."""
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import MySQLdb
import pytest

import config
import faults
import localdb
import measuring
import strategies as S
import tls
from conftest import ROOT
from conftest import request_table as conftest_table

pytestmark = pytest.mark.skipif(not config.LOCAL_SERVER, reason="the local server's TLS and settings")
TLS_STATUS = "SHOW SESSION STATUS LIKE 'Ssl_version'"


def ssl_version(connection):
    cursor = connection.cursor()
    cursor.execute(TLS_STATUS)
    return cursor.fetchone()[1]


def test_the_server_offers_tls_and_plain_clients_still_connect(connect):
    assert localdb.offers_tls()
    assert ssl_version(connect()) == ""
    assert ssl_version(connect(**tls.client_options(localdb.tls_ca()))) == "TLSv1.3"


def test_a_server_started_without_tls_is_restarted_with_it(server_up):
    localdb.stop()
    server = localdb.course()
    localdb.Instance(server.home, server.port).launch()  # as a server started before the course made certificates
    assert not localdb.offers_tls()
    assert localdb.require_tls() == "the server offers TLS (restarted with its certificates)"
    assert localdb.offers_tls() and localdb.require_tls() == "the server offers TLS"


def test_the_certificates_are_made_once(tmp_path):
    first = tls.make_certificates(tmp_path)
    made = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    assert set(made) == {"ca.pem", "ca-key.pem", "server-cert.pem", "server-key.pem"}
    assert tls.make_certificates(tmp_path) == first
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == made  # kept, not made again


def test_a_ca_that_did_not_sign_the_certificate_is_refused(tmp_path, connect):
    tls.make_authority(tmp_path, name="another CA")
    with pytest.raises(MySQLdb.OperationalError) as refused:
        connect(ssl={"ca": str(tmp_path / "ca.pem")})
    assert refused.value.args[0] == 2026


def test_a_ca_alone_does_not_check_the_address_and_verify_identity_does(connect):
    try:
        relay = faults.LinkCutter(address="127.0.0.2")  # an address the certificate does not name
    except OSError:
        pytest.skip("no 127.0.0.2 here (Linux has all of 127/8 on loopback; macOS only 127.0.0.1)")
    with relay:
        elsewhere = dict(host="127.0.0.2", port=relay.port)
        ca = localdb.tls_ca()
        assert ssl_version(connect(**elsewhere, ssl={"ca": str(ca)})) == "TLSv1.3"
        for mode in ("VERIFY_IDENTITY", "VERIFY_CA"):  # on libmariadb mysqlclient sets the same check for both
            with pytest.raises(MySQLdb.OperationalError) as refused:
                connect(**elsewhere, ssl={"ca": str(ca)}, ssl_mode=mode)
            assert refused.value.args[0] == 2026


def test_require_secure_transport_refuses_a_plain_client_with_1045(connect):
    root = localdb.course().root_connection()
    try:
        root.cursor().execute("SET GLOBAL require_secure_transport = ON")
        with pytest.raises(MySQLdb.OperationalError) as refused:
            connect()
        assert refused.value.args[0] == 1045  # the wrong password's error: nothing says TLS
        assert ssl_version(connect(**tls.client_options(localdb.tls_ca()))) == "TLSv1.3"
    finally:
        root.cursor().execute("SET GLOBAL require_secure_transport = OFF")
        root.close()


def test_the_relay_closes_a_connection_at_its_age_mid_statement_and_after_an_idle_spell(connect):
    with faults.LinkCutter(close_after=0.5) as proxy:
        cursor = connect(port=proxy.port).cursor()
        with pytest.raises(MySQLdb.OperationalError) as cut:
            cursor.execute("SELECT SLEEP(2)")  # busy all along: the age rule strikes anyway
        assert cut.value.args[0] == 2013 and proxy.closed == {"age": 1, "idle": 0}
    with faults.LinkCutter(close_idle_after=0.3) as proxy:
        connection = connect(port=proxy.port)
        for _ in range(3):  # used every 0.1 s: never idle long enough
            connection.ping()
            time.sleep(0.1)
        assert proxy.closed == {"age": 0, "idle": 0}
        time.sleep(0.5)
        with pytest.raises(MySQLdb.OperationalError):
            connection.ping()
        assert proxy.closed == {"age": 0, "idle": 1}


def test_after_the_proxys_idle_close_the_safe_reconnect_runs_a_write_once():
    with conftest_table("managed_idle") as rows, faults.LinkCutter(close_idle_after=0.3) as proxy:
        strategy = S.SafeReconnect(S.database(S.SafeReconnectMySQLDatabase, port=proxy.port))
        insert = "INSERT INTO managed_idle (request_id) VALUES (%s)"
        assert measuring.attempt(strategy, lambda db: db.execute_sql(insert, (1,))).ok
        idle_closes = proxy.closed["idle"]  # 1 where a busy machine stalled 0.3 s between connect and insert
        time.sleep(0.6)
        assert proxy.closed["idle"] == idle_closes + 1
        outcome = measuring.attempt(strategy, lambda db: db.execute_sql(insert, (2,)))
        strategy.close()
        assert outcome.ok and rows(2) == 1  # it saw the hang-up before sending: nothing was in doubt


def requests_behind(close_after, max_age, requests=4):
    """Back-to-back 0.5 s requests under ping behind a proxy closing connections ``close_after`` old."""
    with faults.LinkCutter(close_after=close_after) as proxy:
        strategy = S.Ping(S.database(port=proxy.port, max_age=max_age))
        failed = sum(not measuring.attempt(strategy, lambda db: db.execute_sql("SELECT SLEEP(0.5)")).ok
                     for _ in range(requests))
        strategy.close()
    return failed, proxy.closed["age"]


def test_a_max_age_below_the_proxys_age_less_the_longest_request_stays_ahead():
    # the proxy cuts at 1.25 s, halfway through the third request: 0.25 s either side, for a busy
    # machine's pauses between requests (with 0.3 s requests and 0.15 s either side, the CI
    # rehearsal's pauses once let the cut fall between two; with 0.2 s and a cut at 0.9 s, one did)
    with ThreadPoolExecutor() as side_by_side:  # each mostly waits
        without, within = side_by_side.map(lambda max_age: requests_behind(1.25, max_age), [None, 0.5])
    assert without == (1, 1)  # the cut strikes the third request: the harness sees it
    # retired at a request's start once past 0.5 s (less its jitter), a connection is at most
    # 0.5 + 0.5 s old at a request's end
    assert within == (0, 0)


def test_overhead_measures_with_tls_beside_plain_and_says_so():
    done = subprocess.run([sys.executable, "bench/overhead.py", "--tls", "--rtt-ms", "1", "--repeat", "5", "--json"],
                          capture_output=True, text=True, cwd=ROOT, check=True)
    run = json.loads(done.stdout)["runs"][0]
    assert run["tls"]["version"] == "TLSv1.3" and run["tls"]["cipher"]
    plain = {row["name"]: row for row in run["strategies"]}
    over_tls = {row["name"]: row for row in run["tls"]["strategies"]}
    assert {"naive", "per_request"} <= plain.keys() and not any(name.endswith("_tls") for name in plain)
    assert set(over_tls) == {f"{name}_tls" for name in S.STRATEGIES}
    assert over_tls["naive_tls"]["ratio"] == 1.0 and run["tls"]["floor_us"] >= 1000  # through the relay too
    assert over_tls["per_request_tls"]["ratio"] > 1 and plain["per_request"]["ratio"] > 1


def test_overhead_does_not_count_instructions_with_tls():
    done = subprocess.run([sys.executable, "bench/overhead.py", "--tls", "--instructions"], capture_output=True,
                          text=True, cwd=ROOT)
    assert done.returncode == 2 and "--instructions counts without TLS" in done.stderr



def test_overhead_with_tls_says_it_needs_the_local_server():
    done = subprocess.run([sys.executable, "bench/overhead.py", "--tls"], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "DB_HOST": "127.0.0.1"})
    assert done.returncode == 2 and "unset DB_HOST" in done.stderr
