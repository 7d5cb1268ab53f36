"""Raw HTTP against `hsm-kms serve`, signed with botocore's own SigV4 signer: protocol errors
(unknown operation, malformed JSON, missing members, unknown paths, bodies over the limit),
SigV4 refusals (tampered body, header, date, region; clock skew; unknown access key; no
Authorization), the headers every response carries, `/healthz` and `/metrics`."""

from __future__ import annotations

import base64
import datetime
import json
import math
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from unittest import mock

import pytest
import requests
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from conftest import REGION

JSON_11 = "application/x-amz-json-1.1"
MISMATCH = (
    "The request signature we calculated does not match the signature you provided. "
    "Check your AWS Secret Access Key and signing method. Consult the service "
    "documentation for details."
)


def signed(
    server,
    target: str,
    body: bytes,
    *,
    region: str = REGION,
    access_key: str | None = None,
    when: datetime.datetime | None = None,
) -> dict[str, str]:
    """Headers of a POST / signed by botocore's SigV4Auth for `body`."""
    request = AWSRequest(
        method="POST",
        url=server.endpoint + "/",
        data=body,
        headers={"Content-Type": JSON_11, "X-Amz-Target": f"TrentService.{target}"},
    )
    credentials = Credentials(access_key or server.access_key, server.secret_key)
    if when is None:
        SigV4Auth(credentials, "kms", region).add_auth(request)
    else:
        with mock.patch("botocore.auth.get_current_datetime", return_value=when):
            SigV4Auth(credentials, "kms", region).add_auth(request)
    return dict(request.headers.items())


def post(server, headers: dict[str, str], body: bytes) -> requests.Response:
    return requests.post(server.endpoint + "/", headers=headers, data=body, timeout=30)


def assert_error(response: requests.Response, status: int, code: str) -> str:
    """Checks the AWS error shape; returns the message."""
    assert response.status_code == status, response.text
    assert response.headers["X-Amzn-ErrorType"] == code
    assert response.headers["x-amzn-RequestId"]
    assert response.headers["Content-Type"] == JSON_11
    body = response.json()
    assert body["__type"] == code
    return body.get("message", "")


def call(server, target: str, body: bytes) -> requests.Response:
    return post(server, signed(server, target, body), body)


# --- The protocol -------------------------------------------------------------------------


def test_a_signed_raw_request_succeeds_with_a_request_id(server):
    response = call(server, "ListKeys", b"{}")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == JSON_11
    assert response.headers["x-amzn-RequestId"]
    assert "X-Amzn-ErrorType" not in response.headers
    assert isinstance(response.json()["Keys"], list)
    other = call(server, "ListKeys", b"{}")
    assert other.headers["x-amzn-RequestId"] != response.headers["x-amzn-RequestId"]


def test_timestamps_are_epoch_seconds_on_the_wire(server):
    created = call(server, "CreateKey", b"{}").json()["KeyMetadata"]
    assert isinstance(created["CreationDate"], (int, float))
    assert created["KeyId"] in created["Arn"]


def test_unknown_operation(server):
    message = assert_error(call(server, "Nope", b"{}"), 400, "UnknownOperationException")
    assert isinstance(message, str)


def test_malformed_json(server):
    assert_error(call(server, "ListKeys", b'{"Limit": '), 400, "SerializationException")


def test_wrong_member_type(server):
    assert_error(call(server, "DescribeKey", b'{"KeyId": 5}'), 400, "SerializationException")


def test_missing_required_member(server):
    message = assert_error(call(server, "Encrypt", b'{"Plaintext": "eA=="}'), 400, "ValidationException")
    assert message == (
        "1 validation error detected: Value null at 'keyId' failed to satisfy constraint: "
        "Member must not be null"
    )


def test_bad_base64_blob(server):
    body = json.dumps({"CiphertextBlob": "%%% not base64 %%%"}).encode()
    assert_error(call(server, "Decrypt", body), 400, "SerializationException")


# --- SigV4 --------------------------------------------------------------------------------


def test_tampered_body(server):
    headers = signed(server, "GenerateRandom", b'{"NumberOfBytes": 16}')
    message = assert_error(
        post(server, headers, b'{"NumberOfBytes": 17}'), 400, "InvalidSignatureException"
    )
    assert message == MISMATCH


def test_tampered_signed_header(server):
    headers = signed(server, "ListKeys", b"{}")
    headers["X-Amz-Target"] = "TrentService.ListAliases"
    message = assert_error(post(server, headers, b"{}"), 400, "InvalidSignatureException")
    assert message == MISMATCH


def test_tampered_date(server):
    headers = signed(server, "ListKeys", b"{}")
    signed_at = datetime.datetime.strptime(headers["X-Amz-Date"], "%Y%m%dT%H%M%SZ")
    headers["X-Amz-Date"] = (signed_at + datetime.timedelta(seconds=1)).strftime("%Y%m%dT%H%M%SZ")
    if headers["X-Amz-Date"][:8] != signed_at.strftime("%Y%m%d"):
        pytest.skip("signed one second before midnight: the scope check would answer instead")
    message = assert_error(post(server, headers, b"{}"), 400, "InvalidSignatureException")
    assert message == MISMATCH


def test_another_region(server):
    body = b"{}"
    message = assert_error(
        post(server, signed(server, "ListKeys", body, region="eu-west-1"), body),
        400,
        "InvalidSignatureException",
    )
    assert message == "Credential should be scoped to a valid region, not 'eu-west-1'."


@pytest.mark.parametrize("minutes", [-6, 6])
def test_clock_skew(server, minutes):
    when = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(minutes=minutes)
    body = b"{}"
    message = assert_error(
        post(server, signed(server, "ListKeys", body, when=when), body),
        400,
        "InvalidSignatureException",
    )
    expected = "Signature expired:" if minutes < 0 else "Signature not yet current:"
    assert message.startswith(f"{expected} {when.strftime('%Y%m%dT%H%M%SZ')} is ")


def test_within_skew_is_accepted(server):
    when = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=4)
    body = b"{}"
    assert post(server, signed(server, "ListKeys", body, when=when), body).status_code == 200


def test_unknown_access_key(server):
    body = b"{}"
    message = assert_error(
        post(server, signed(server, "ListKeys", body, access_key="AKIANOTKNOWNATALL000"), body),
        400,
        "UnrecognizedClientException",
    )
    assert message == "The security token included in the request is invalid."


def test_missing_authorization(server):
    headers = signed(server, "ListKeys", b"{}")
    del headers["Authorization"]
    message = assert_error(post(server, headers, b"{}"), 400, "MissingAuthenticationTokenException")
    assert message == "Request is missing Authentication Token"


def test_malformed_authorization(server):
    headers = signed(server, "ListKeys", b"{}")
    headers["Authorization"] = "AWS4-HMAC-SHA256 Credential=garbage"
    assert_error(post(server, headers, b"{}"), 400, "IncompleteSignatureException")


# --- Health and metrics -------------------------------------------------------------------


def test_healthz(server):
    response = requests.get(server.endpoint + "/healthz", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    health = response.json()
    assert health["serving"] is True
    assert health["audit"] == {"on_failure": "refuse", "writable": True, "lost_events": 0}


def test_metrics_count_requests_by_operation(server, kms):
    kms.list_keys()
    kms.generate_random(NumberOfBytes=8)
    with pytest.raises(kms.exceptions.NotFoundException):
        kms.describe_key(KeyId="alias/metrics-missing")
    response = requests.get(server.endpoint + "/metrics", timeout=10)
    assert response.status_code == 200
    lines = [line for line in response.text.splitlines() if line.startswith("hsm_kms_requests_total")]
    assert any('operation="ListKeys"' in line for line in lines), lines
    assert any('operation="GenerateRandom"' in line for line in lines), lines
    assert any(
        'operation="DescribeKey"' in line and "NotFoundException" in line for line in lines
    ), lines
    assert "hsm_kms_audit_failing 0" in response.text.splitlines()


def metric(server, name: str) -> float | None:
    """The value of an unlabelled metric in the `/metrics` text, if present."""
    text = requests.get(server.endpoint + "/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def test_unknown_targets_share_one_metrics_label(server):
    names = [f"NoSuchOperation{uuid.uuid4().hex}" for _ in range(20)]
    for name in names:
        response = requests.post(
            server.endpoint + "/",
            headers={"Content-Type": JSON_11, "X-Amz-Target": f"TrentService.{name}"},
            data=b"{}",
            timeout=30,
        )
        assert response.status_code == 400
    text = requests.get(server.endpoint + "/metrics", timeout=10).text
    leaked = [name for name in names if name in text]
    assert not leaked, "caller-chosen targets became metric labels"
    assert 'operation="unknown"' in text


def test_concurrent_healthz_calls_share_one_probe_a_second(server):
    before = metric(server, "hsm_kms_health_probes_total")
    assert before is not None
    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(
            pool.map(
                lambda _: requests.get(server.endpoint + "/healthz", timeout=30).status_code,
                range(64),
            )
        )
    elapsed = time.monotonic() - started
    after = metric(server, "hsm_kms_health_probes_total")
    assert statuses == [200] * 64
    # One probe per started second at most, whatever the number of callers.
    assert after - before <= math.ceil(elapsed) + 1, (before, after, elapsed)


def test_pending_deletions_follow_schedule_and_cancel(server, kms):
    before = metric(server, "hsm_kms_pending_deletions")
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    kms.schedule_key_deletion(KeyId=key, PendingWindowInDays=7)
    assert metric(server, "hsm_kms_pending_deletions") == before + 1
    kms.cancel_key_deletion(KeyId=key)
    assert metric(server, "hsm_kms_pending_deletions") == before


@pytest.mark.parametrize(
    "method,path", [("GET", "/nope"), ("POST", "/v1/keys"), ("PUT", "/"), ("DELETE", "/healthz")]
)
def test_unknown_paths_and_methods_get_an_aws_json_error(server, method, path):
    response = requests.request(method, server.endpoint + path, data=b"{}", timeout=10)
    message = assert_error(response, 404, "UnknownOperationException")
    assert message


def test_a_body_over_the_limit_gets_an_aws_json_error(server):
    body = json.dumps({"KeyId": "alias/x", "Plaintext": "A" * 70_000}).encode()
    message = assert_error(
        post(server, signed(server, "Encrypt", body), body), 413, "RequestEntityTooLargeException"
    )
    assert "65536" in message
    # The server still answers on new connections.
    assert call(server, "ListKeys", b"{}").status_code == 200


def test_invalid_ciphertext_has_no_message_member(server):
    body = json.dumps({"CiphertextBlob": base64.b64encode(b"not a ciphertext blob at all").decode()}).encode()
    response = call(server, "Decrypt", body)
    assert_error(response, 400, "InvalidCiphertextException")
    assert response.json() == {"__type": "InvalidCiphertextException"}
