"""Sign a request with botocore's SigV4 (AWS's own Python signer), and send it if asked: the
independent signer the sandbox's verifier and stagehost's signer are checked against
(tests/lua/test_aws.lua).

  python3 sigv4_botocore.py < {"method", "url", "headers": {}, "body", "service", "region",
      "access_key_id", "secret_access_key", "session_token"?, "time"?: "20260101T000000Z",
      "send"?: true, "tamper"?: "signature" | "body"}
  -> {"headers": {name: value, ...} (what botocore added and signed),
      "status"?: 200, "body"?: "..."} (when sent, with urllib: no stagehost code on the way)

Exits 77 with one line on stderr when botocore is not importable.
"""
import datetime
import json
import sys
import urllib.error
import urllib.request

try:
    import botocore.auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
except ImportError as e:
    print(f"botocore is not importable by {sys.executable}: {e}", file=sys.stderr)
    sys.exit(77)


def fix_clock(fixed):
    """Sign at a given time: newer botocore reads get_current_datetime(), older (Debian 12's
    1.29) datetime.datetime.utcnow() through the module's own `datetime`."""
    if hasattr(botocore.auth, "get_current_datetime"):
        botocore.auth.get_current_datetime = lambda: fixed
        return

    class FixedDatetime(datetime.datetime):
        @classmethod
        def utcnow(cls):
            return fixed

    class FixedModule:
        datetime = FixedDatetime

        def __getattr__(self, name):
            return getattr(datetime, name)

    botocore.auth.datetime = FixedModule()


def main():
    case = json.load(sys.stdin)
    if case.get("time"):
        fix_clock(datetime.datetime.strptime(case["time"], "%Y%m%dT%H%M%SZ"))
    body = case.get("body", "").encode()
    request = AWSRequest(method=case["method"], url=case["url"], data=body, headers=dict(case.get("headers", {})))
    credentials = Credentials(case["access_key_id"], case["secret_access_key"], case.get("session_token"))
    botocore.auth.SigV4Auth(credentials, case["service"], case["region"]).add_auth(request)
    headers = {name: value for name, value in request.headers.items()}
    answer = {"headers": headers}
    if case.get("send"):
        if case.get("tamper") == "signature":
            auth = headers["Authorization"]
            last = auth[-1]
            headers["Authorization"] = auth[:-1] + ("0" if last != "0" else "1")
        if case.get("tamper") == "body":
            body = body + b"&Tampered=1"
        sent = urllib.request.Request(case["url"], data=body if case["method"] != "GET" else None,
                                      headers=headers, method=case["method"])
        try:
            with urllib.request.urlopen(sent, timeout=30) as response:
                answer["status"], answer["body"] = response.status, response.read().decode()
        except urllib.error.HTTPError as e:
            answer["status"], answer["body"] = e.code, e.read().decode()
    json.dump(answer, sys.stdout, sort_keys=True)


if __name__ == "__main__":
    main()
