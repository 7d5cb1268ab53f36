"""A real `hsm-kms serve` for the client tests: one per test session.

The session fixture builds the binary, makes a two-member SoftHSM2 cluster in a temporary
directory with scripts/softhsm-cluster.sh, runs `cluster init`, starts the server on a free
loopback port and waits for `GET /healthz` to answer 200. At the end it sends SIGTERM and
asserts that the server exits 0 within 30 seconds. The clients read the development
credential from the cluster's shared-credentials file (profile `hsm-kms`), as a user would.
"""

from __future__ import annotations

import configparser
import dataclasses
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import boto3
import botocore.config
import botocore.exceptions
import pytest
import requests

REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
ACCOUNT = "111122223333"
PROFILE = "hsm-kms"
# A second account, for the cross-account tests.
OTHER_ACCOUNT = "444455556666"

# More credentials the server accepts, for the authorization tests: name -> (account, IAM
# identity policy or None, principal tags, via_service). Their secrets come from the
# server's environment (HSM_KMS_TEST_SECRET_<NAME>).
USERS = {
    "alice": (ACCOUNT, None, {}, None),
    "bob": (ACCOUNT, None, {}, None),
    "carol": (
        ACCOUNT,
        {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"], "Resource": "*"},
        ]},
        {"team": "blue"},
        "gateway",
    ),
    "partner": (
        OTHER_ACCOUNT,
        {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey"], "Resource": "*"},
        ]},
        {},
        None,
    ),
    "stranger": (OTHER_ACCOUNT, None, {}, None),
    # A LocalStack/moto-style harness credential: access key id "test".
    "harness": (ACCOUNT, None, {}, None),
    # Integrated services calling for the account's users (AWS managed keys).
    "s3gateway": (ACCOUNT, None, {}, f"s3.{REGION}.amazonaws.com"),
    "ebsgateway": (ACCOUNT, None, {}, f"ec2.{REGION}.amazonaws.com"),
}


def refused(call, code: str) -> str:
    """Runs a call that must fail with AWS error `code`; returns AWS's message."""
    with pytest.raises(botocore.exceptions.ClientError) as raised:
        call()
    error = raised.value.response["Error"]
    assert error["Code"] == code, error
    return error["Message"]


def user_access_key(name: str) -> str:
    """The access key id of one of USERS (the harness signs as "test", as such harnesses do)."""
    if name == "harness":
        return "test"
    return f"AKIATEST{name.upper():0<12}"[:20]


def user_secret(name: str) -> str:
    return f"test-secret-of-{name}-0123456789abcdef"


def user_arn(name: str) -> str:
    return f"arn:aws:iam::{USERS[name][0]}:user/{name}"


def _user_credentials() -> str:
    """The [[credentials]] entries of USERS, as TOML."""
    entries = []
    for name, (account, policy, tags, via_service) in USERS.items():
        lines = [
            "[[credentials]]",
            f'access_key_id = "{user_access_key(name)}"',
            f'secret = "env:HSM_KMS_TEST_SECRET_{name.upper()}"',
            f'account_id = "{account}"',
            f'principal_arn = "{user_arn(name)}"',
        ]
        if policy is not None:
            lines.append(f"policies = [{json.dumps(json.dumps(policy))}]")
        if tags:
            lines.append("tags = { " + ", ".join(f'{k} = "{v}"' for k, v in tags.items()) + " }")
        if via_service:
            lines.append(f'via_service = "{via_service}"')
        entries.append("\n".join(lines))
    return "\n\n" + "\n\n".join(entries) + "\n"


@dataclasses.dataclass(frozen=True)
class Server:
    """Where the server listens and how to sign requests for it."""

    endpoint: str
    credentials_file: Path
    config: Path
    access_key: str
    secret_key: str
    log: Path

    def key_arn(self, key_id: str) -> str:
        return f"arn:aws:kms:{REGION}:{ACCOUNT}:key/{key_id}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_healthy(endpoint: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"hsm-kms serve exited with {process.returncode}:\n{log.read_text()}")
        try:
            if requests.get(f"{endpoint}/healthz", timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    process.kill()
    pytest.fail(f"hsm-kms serve did not become healthy within 60 s:\n{log.read_text()}")


BINARY = REPO / "target" / "debug" / "hsm-kms"


@pytest.fixture(scope="session")
def binary() -> Path:
    """The `hsm-kms` binary, built once per session."""
    subprocess.run(["cargo", "build", "--bin", "hsm-kms"], cwd=REPO, check=True)
    return BINARY


def make_cluster(binary: Path, directory: Path) -> Path:
    """A two-member SoftHSM2 cluster made in `directory` and initialised; its config file."""
    subprocess.run([REPO / "scripts" / "softhsm-cluster.sh", directory, "2"], check=True)
    config = directory / "hsm-kms.toml"
    subprocess.run([binary, "--config", config, "cluster", "init"], check=True)
    return config


def profile_credentials(credentials_file: Path) -> tuple[str, str]:
    """(access key id, secret) of the profile PROFILE in a shared-credentials file."""
    parser = configparser.ConfigParser()
    parser.read(credentials_file)
    profile = parser[PROFILE]
    return profile["aws_access_key_id"], profile["aws_secret_access_key"]


def start_serve(
    binary: Path, config: Path, log: Path, env: dict[str, str] | None = None
) -> tuple[str, subprocess.Popen]:
    """`hsm-kms serve` with `config` on a free loopback port, logging to `log`, once
    `/healthz` answers 200: (endpoint, process)."""
    endpoint = f"http://127.0.0.1:{_free_port()}"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [binary, "--config", config, "serve", "--listen", endpoint.removeprefix("http://")],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
        )
    _wait_healthy(endpoint, process, log)
    return endpoint, process


def stop_serve(process: subprocess.Popen, log: Path) -> None:
    """SIGTERM; the server must exit 0 within 30 seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail(f"hsm-kms serve did not exit within 30 s of SIGTERM:\n{log.read_text()}")
    assert code == 0, f"hsm-kms serve exited with {code}:\n{log.read_text()}"


@pytest.fixture(scope="session")
def server(binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Server:
    work = tmp_path_factory.mktemp("hsm-kms")
    cluster = work / "cluster"
    config = make_cluster(binary, cluster)
    with config.open("a") as appended:
        appended.write(_user_credentials())
    server_env = dict(os.environ)
    server_env.update({f"HSM_KMS_TEST_SECRET_{name.upper()}": user_secret(name) for name in USERS})

    credentials_file = cluster / "credentials"
    access_key, secret_key = profile_credentials(credentials_file)
    log = work / "serve.log"
    endpoint, process = start_serve(binary, config, log, server_env)
    try:
        yield Server(
            endpoint=endpoint,
            credentials_file=credentials_file,
            config=config,
            access_key=access_key,
            secret_key=secret_key,
            log=log,
        )
    finally:
        stop_serve(process, log)


@pytest.fixture(scope="session")
def aws_env(server: Server, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment a user of the AWS tools sets: the credentials file, the profile and
    the region; no other AWS setting of this machine leaks in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_SHARED_CREDENTIALS_FILE=str(server.credentials_file),
        AWS_CONFIG_FILE=str(tmp_path_factory.mktemp("aws") / "config"),
        AWS_PROFILE=PROFILE,
        AWS_DEFAULT_REGION=REGION,
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


@pytest.fixture(scope="session")
def session(aws_env: dict[str, str]) -> boto3.Session:
    """A boto3 session reading the profile from the cluster's credentials file."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(aws_env)
    try:
        yield boto3.Session(profile_name=PROFILE, region_name=REGION)
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="session")
def kms_as(server: Server):
    """A boto3 KMS client signing as one of USERS; no retries."""

    def client(name: str):
        return boto3.client(
            "kms",
            endpoint_url=server.endpoint,
            region_name=REGION,
            aws_access_key_id=user_access_key(name),
            aws_secret_access_key=user_secret(name),
            config=botocore.config.Config(retries={"total_max_attempts": 1}),
        )

    return client


@pytest.fixture(scope="session")
def kms(server: Server, session: boto3.Session):
    """A boto3 KMS client pointed at the server; no retries, so each call is one request."""
    return session.client(
        "kms",
        endpoint_url=server.endpoint,
        config=botocore.config.Config(retries={"total_max_attempts": 1}),
    )
