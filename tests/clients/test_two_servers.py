"""Two `hsm-kms serve` processes on one PostgreSQL database and one two-member SoftHSM2
cluster, driven by boto3 over real HTTP, alternating between the endpoints: a key made on one
is used on the other, an alias made on one resolves on the other, a key disabled on one is
refused by the other within a second, an alias raced on both has exactly one winner, and a
SIGKILLed instance costs clients that retry a failed call on the other endpoint nothing while
the background work's leadership moves to the survivor.

Each pair of servers gets a fresh database in the PostgreSQL cluster that
`HSM_KMS_TEST_POSTGRES_URL` names (scripts/test.sh starts a throw-away one and sets it),
made and dropped with `psql`; without the variable the module skips and says why.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import secrets
import subprocess
import threading
import time
import urllib.parse
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import botocore.config
import botocore.exceptions
import pytest
import requests

from conftest import REGION, make_cluster, profile_credentials, start_serve, stop_serve

URL_ENV = "HSM_KMS_TEST_POSTGRES_URL"
# The longest a change on one instance may take to be seen by the other.
CONSISTENCY_BOUND = 1.0
# The longest the survivor may take to become leader after the leader dies.
HAND_OVER_BOUND = 10.0

pytestmark = pytest.mark.skipif(
    not os.environ.get(URL_ENV),
    reason=f"{URL_ENV} is not set (scripts/test.sh starts a throw-away PostgreSQL and sets it)",
)


def _psql(sql: str) -> None:
    """Runs one statement as the test cluster's administrator. The password goes to psql
    through its environment, never its command line or an error message."""
    url = urllib.parse.urlsplit(os.environ[URL_ENV])
    env = dict(
        os.environ,
        PGHOST=url.hostname or "",
        PGPORT=str(url.port or 5432),
        PGUSER=urllib.parse.unquote(url.username or ""),
        PGPASSWORD=urllib.parse.unquote(url.password or ""),
        PGDATABASE=url.path.lstrip("/"),
    )
    result = subprocess.run(
        ["psql", "--no-psqlrc", "--quiet", "--set", "ON_ERROR_STOP=1", "--command", sql],
        env=env, capture_output=True, text=True,
    )
    assert result.returncode == 0, f"psql {sql!r} failed:\n{result.stderr}"


@dataclasses.dataclass
class Instance:
    """One running server of the pair."""

    endpoint: str
    process: subprocess.Popen
    log: Path

    def leads(self) -> bool | None:
        """Whether it says it is the leader in `/metrics`; None when it does not answer."""
        try:
            text = requests.get(f"{self.endpoint}/metrics", timeout=2).text
        except requests.RequestException:
            return None
        for line in text.splitlines():
            if line.startswith("hsm_kms_leader "):
                return line.endswith(" 1")
        return None


@dataclasses.dataclass
class TwoServers:
    a: Instance
    b: Instance
    session: boto3.Session

    def client(self, instance: Instance):
        """A boto3 KMS client for one instance; no retries, so each call is one request."""
        return self.session.client(
            "kms",
            endpoint_url=instance.endpoint,
            config=botocore.config.Config(
                retries={"total_max_attempts": 1}, connect_timeout=5, read_timeout=15
            ),
        )


@contextlib.contextmanager
def two_servers(binary: Path, work: Path):
    """Starts two servers on a fresh database and one initialised cluster; yields them, then
    stops the ones still running (each must exit 0 on SIGTERM) and drops the database."""
    database = f"hsmkms_test_{uuid.uuid4().hex}"
    _psql(f"CREATE DATABASE {database}")
    started: list[Instance] = []
    try:
        cluster = work / "cluster"
        base = make_cluster(binary, cluster).read_text()
        admin_url = os.environ[URL_ENV]
        url_file = cluster / "postgres-url"
        url_file.touch(mode=0o600)
        url_file.write_text(f"{admin_url.rsplit('/', 1)[0]}/{database}")
        for name in ("a", "b"):
            # Each instance has its own data directory (admin socket, alarm file) and
            # shares the metadata store.
            lines = [
                f"data_dir = {json.dumps(str(cluster / f'data-{name}'))}"
                if line.startswith("data_dir = ")
                else line
                for line in base.splitlines()
            ]
            config = cluster / f"instance-{name}.toml"
            config.write_text(
                "\n".join(lines)
                + f'\n\n[store]\nbackend = "postgres"\nurl = {json.dumps(f"file:{url_file}")}\n'
            )
            log = work / f"serve-{name}.log"
            endpoint, process = start_serve(binary, config, log)
            started.append(Instance(endpoint, process, log))
        access_key, secret_key = profile_credentials(cluster / "credentials")
        session = boto3.Session(
            aws_access_key_id=access_key, aws_secret_access_key=secret_key, region_name=REGION
        )
        yield TwoServers(started[0], started[1], session)
        for instance in started:
            if instance.process.returncode is None:
                stop_serve(instance.process, instance.log)
    finally:
        for instance in started:
            if instance.process.poll() is None:
                instance.process.kill()
                instance.process.wait()
        _psql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


@pytest.fixture(scope="module")
def servers(binary, tmp_path_factory) -> TwoServers:
    with two_servers(binary, tmp_path_factory.mktemp("two-servers")) as pair:
        yield pair


def _code(excinfo) -> str:
    return excinfo.value.response["Error"]["Code"]


def test_a_key_made_on_one_is_used_on_the_other(servers):
    a, b = servers.client(servers.a), servers.client(servers.b)
    key_id = a.create_key(Description="made on A")["KeyMetadata"]["KeyId"]
    blob = b.encrypt(KeyId=key_id, Plaintext=b"sealed on B")["CiphertextBlob"]
    opened = a.decrypt(CiphertextBlob=blob)
    assert opened["Plaintext"] == b"sealed on B"
    assert opened["KeyId"].endswith(key_id)
    assert b.describe_key(KeyId=key_id)["KeyMetadata"]["Description"] == "made on A"


def test_an_alias_made_on_one_resolves_on_the_other(servers):
    a, b = servers.client(servers.a), servers.client(servers.b)
    key_id = a.create_key()["KeyMetadata"]["KeyId"]
    alias = f"alias/across-{key_id[:8]}"
    b.create_alias(AliasName=alias, TargetKeyId=key_id)
    assert a.describe_key(KeyId=alias)["KeyMetadata"]["KeyId"] == key_id
    blob = a.encrypt(KeyId=alias, Plaintext=b"by alias")["CiphertextBlob"]
    assert b.decrypt(CiphertextBlob=blob)["Plaintext"] == b"by alias"
    with pytest.raises(botocore.exceptions.ClientError) as taken:
        a.create_alias(AliasName=alias, TargetKeyId=key_id)
    assert _code(taken) == "AlreadyExistsException"


def test_a_key_disabled_on_one_is_refused_by_the_other_within_a_second(servers):
    a, b = servers.client(servers.a), servers.client(servers.b)
    key_id = a.create_key()["KeyMetadata"]["KeyId"]
    worst = 0.0
    trials = 10
    for trial in range(trials):
        changer, reader = (a, b) if trial % 2 == 0 else (b, a)
        # Warm the reader's cache with the enabled key first.
        reader.encrypt(KeyId=key_id, Plaintext=b"hi")
        changer.disable_key(KeyId=key_id)
        disabled = time.monotonic()
        while True:
            try:
                reader.encrypt(KeyId=key_id, Plaintext=b"hi")
            except botocore.exceptions.ClientError as error:
                assert error.response["Error"]["Code"] == "DisabledException", error
                break
            elapsed = time.monotonic() - disabled
            assert elapsed < CONSISTENCY_BOUND, (
                f"trial {trial}: still encrypting {elapsed:.3f} s after DisableKey on the other"
            )
        worst = max(worst, time.monotonic() - disabled)
        changer.enable_key(KeyId=key_id)
        enabled = time.monotonic()
        while True:
            try:
                reader.encrypt(KeyId=key_id, Plaintext=b"hi")
                break
            except botocore.exceptions.ClientError as error:
                assert error.response["Error"]["Code"] == "DisabledException", error
                assert time.monotonic() - enabled < CONSISTENCY_BOUND, f"trial {trial}: still disabled"
    print(f"DisableKey on one instance refused on the other: worst {worst * 1000:.1f} ms over {trials} trials")


def test_an_alias_raced_on_both_has_one_winner(servers):
    a, b = servers.client(servers.a), servers.client(servers.b)
    key_id = a.create_key()["KeyMetadata"]["KeyId"]
    rounds = 10
    for round_ in range(rounds):
        name = f"alias/race-{key_id[:8]}-{round_}"
        barrier = threading.Barrier(2)

        def create(client):
            barrier.wait()
            try:
                client.create_alias(AliasName=name, TargetKeyId=key_id)
                return "won"
            except botocore.exceptions.ClientError as error:
                return error.response["Error"]["Code"]

        with ThreadPoolExecutor(2) as pool:
            outcomes = sorted(pool.map(create, (a, b)))
        assert outcomes == ["AlreadyExistsException", "won"], f"round {round_}: {outcomes}"
    aliases = b.get_paginator("list_aliases").paginate(KeyId=key_id).build_full_result()["Aliases"]
    assert sorted(alias["AliasName"] for alias in aliases) == sorted(
        f"alias/race-{key_id[:8]}-{round_}" for round_ in range(rounds)
    )


def test_a_killed_instance_costs_retrying_clients_nothing_and_hands_over_leadership(
    binary, tmp_path_factory
):
    # A pair of its own: this test kills one of them.
    with two_servers(binary, tmp_path_factory.mktemp("two-servers-kill")) as servers:
        _survive_a_kill(servers)


def _survive_a_kill(servers: TwoServers) -> None:
    key_id = servers.client(servers.a).create_key()["KeyMetadata"]["KeyId"]

    # One leader between them.
    deadline = time.monotonic() + HAND_OVER_BOUND
    while True:
        leads = (servers.a.leads(), servers.b.leads())
        assert leads != (True, True), "two leaders"
        if leads in ((True, False), (False, True)):
            break
        assert time.monotonic() < deadline, "no leader was elected"
        time.sleep(0.1)
    killed, survivor = (servers.a, servers.b) if leads[0] else (servers.b, servers.a)

    # Each worker alternates between the endpoints: Encrypt on one, Decrypt on the other,
    # each call retried once on the other endpoint when it got no answer or an error.
    stop = threading.Event()
    lock = threading.Lock()
    tally = {"done": 0, "failed": 0, "retried": 0}
    failures: list[str] = []
    workers = 4
    clients = [(servers.client(servers.a), servers.client(servers.b)) for _ in range(workers)]

    def call(pair, first: int, operation: str, **kwargs) -> dict | None:
        for index in (first, 1 - first):
            try:
                return getattr(pair[index], operation)(**kwargs)
            except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as error:
                last = error
                with lock:
                    tally["retried"] += 1
        with lock:
            failures.append(f"{operation}: {last!r}")
        return None

    def work(worker: int) -> None:
        pair, turn = clients[worker], worker
        while not stop.is_set():
            first, turn = turn % 2, turn + 1
            plaintext = secrets.token_bytes(32)
            sealed = call(pair, first, "encrypt", KeyId=key_id, Plaintext=plaintext)
            opened = sealed and call(pair, 1 - first, "decrypt", CiphertextBlob=sealed["CiphertextBlob"])
            with lock:
                if opened and opened["Plaintext"] == plaintext:
                    tally["done"] += 1
                else:
                    tally["failed"] += 1
                    if opened:
                        failures.append("Decrypt returned another plaintext")

    with ThreadPoolExecutor(workers) as pool:
        running = [pool.submit(work, worker) for worker in range(workers)]
        try:
            time.sleep(2)
            with lock:
                before = tally["done"]
            killed.process.kill()
            killed.process.wait()
            killed_at = time.monotonic()
            while survivor.leads() is not True:
                assert time.monotonic() - killed_at < HAND_OVER_BOUND, (
                    f"the survivor did not take over within {HAND_OVER_BOUND} s"
                )
                time.sleep(0.1)
            took_over = time.monotonic() - killed_at
            time.sleep(2)
        finally:
            stop.set()
        for future in running:
            future.result()
    after = tally["done"]
    print(
        f"{after} Encrypt+Decrypt round trips ({after - before} after the SIGKILL), "
        f"{tally['retried']} calls retried on the other endpoint, {tally['failed']} failed; "
        f"leadership taken over in {took_over:.2f} s"
    )
    assert tally["failed"] == 0, failures[:5]
    assert after > before, "the survivor kept serving"
