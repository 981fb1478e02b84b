#!/usr/bin/env python3
"""SigV4 with botocore (PyPI), the signer the AWS CLI and boto3 use: an independent check of
patgate's signatures (tests/codecommit_sigv4.rs, tests/hosts_codecommit.rs).

Reads one JSON object on stdin:
  {"method": "POST", "url": "https://host[:port]/", "headers": [["name", "value"], ...],
   "body_b64": "...", "access_key_id": "...", "secret_access_key": "...",
   "session_token": "..." | null, "region": "us-east-1", "service": "codecommit",
   "amz_date": "20260101T000000Z"}
`headers` are the headers to sign besides host, x-amz-date and x-amz-security-token, which
botocore adds itself (host from the URL). botocore's clock is fixed to `amz_date` by
patching botocore.auth.get_current_datetime.

Prints {"authorization": ..., "x-amz-date": ..., "x-amz-security-token": ... | null}.
Exits 2 (with the reason on stderr) when botocore is missing.
"""
import base64
import datetime
import json
import sys

try:
    import botocore
    import botocore.auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
except ImportError as e:  # the Rust tests turn this into a failure, never a skip
    print(f"botocore is not installed: {e}; tests/run.sh installs it", file=sys.stderr)
    sys.exit(2)


def main():
    req = json.load(sys.stdin)
    fixed = datetime.datetime.strptime(req["amz_date"], "%Y%m%dT%H%M%SZ")
    botocore.auth.get_current_datetime = lambda: fixed
    request = AWSRequest(
        method=req["method"],
        url=req["url"],
        data=base64.b64decode(req["body_b64"]),
        headers={name: value for name, value in req["headers"]},
    )
    credentials = Credentials(
        req["access_key_id"], req["secret_access_key"], req.get("session_token")
    )
    botocore.auth.SigV4Auth(credentials, req["service"], req["region"]).add_auth(request)
    print(
        json.dumps(
            {
                "authorization": request.headers["Authorization"],
                "x-amz-date": request.headers["X-Amz-Date"],
                "x-amz-security-token": request.headers.get("X-Amz-Security-Token"),
                "botocore": botocore.__version__,
            }
        )
    )


main()
