#!/usr/bin/env python3
"""Interop helper: sign or verify a patgate-profile request with an
independent RFC 9421 implementation, the PyPI package
`http-message-signatures` (3.x).

Reads one JSON object on stdin, writes one JSON object on stdout.

mode "sign" (the default):
  {"mode": "sign",
   "request": {"method": "POST", "url": "https://...", "headers": [["Host", "..."], ...],
               "body_b64": "..." or null},
   "created": 1767225600, "nonce": "...", "label": "py",
   "components": ["@method", "@target-uri", ...],      (optional; default: the patgate profile)
   "keys": {"ed25519": {"keyid": "...", "seed_b64": "..."},          (either or both)
            "hmac": {"keyid": "...", "secret_b64": "..."}}}
  -> {"ed25519": {"headers": {"Signature-Input": ..., "Signature": ..., "Content-Digest": ...},
                  "signature_base": "..."},
      "hmac-sha256": {...}}
  When the request has a body and no Content-Digest header, a sha-256
  Content-Digest computed by the Python package is added (and returned).

mode "verify":
  {"mode": "verify", "request": {... with Signature-Input / Signature headers},
   "alg": "ed25519" | "hmac-sha256",
   "keys": {"ed25519": {"keyid": "...", "public_b64": "..."}, "hmac": {"keyid": "...", "secret_b64": "..."}},
   "require_components": [...], "max_age": 60}
  -> {"ok": true, "label": ..., "covered": [...], "params": {...}}   exit 0
  or {"ok": false, "error": "..."}                                     exit 1

Requires: pip install 'http-message-signatures>=3,<4'
"""

import base64
import datetime
import json
import sys

try:
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from http_message_signatures import (
        ContentDigest,
        HTTPMessageSigner,
        HTTPMessageVerifier,
        MappingKeyResolver,
        algorithms,
    )
except ImportError as e:  # fail loudly: the Rust test must not pass silently
    sys.stderr.write(
        "sign_with_python.py: cannot import http_message_signatures (%s).\n"
        "Install it with: pip install 'http-message-signatures>=3,<4'\n" % e
    )
    sys.exit(3)

PROFILE_POST = ["@method", "@target-uri", "patgate-account", "content-digest", "content-type"]
PROFILE_GET = ["@method", "@target-uri"]


class Request:
    """The minimal message interface the package reads: method, url, headers."""

    def __init__(self, spec):
        self.method = spec["method"]
        self.url = spec["url"]
        # A plain dict keeps one line per field name, which is all the
        # profile needs; names keep their spelling.
        self.headers = {}
        for name, value in spec.get("headers", []):
            if name in self.headers:
                self.headers[name] = self.headers[name] + ", " + value
            else:
                self.headers[name] = value
        body = spec.get("body_b64")
        self.body = base64.b64decode(body) if body is not None else None


def utc(ts):
    return datetime.datetime.fromtimestamp(ts, tz=datetime.timezone.utc)


def has_header(headers, name):
    return any(k.lower() == name for k in headers)


def sign(inp):
    out = {}
    keys = inp["keys"]
    for alg_name, key_spec in keys.items():
        req = Request(inp["request"])
        if req.body is not None and not has_header(req.headers, "content-digest"):
            req.headers["Content-Digest"] = ContentDigest.create(req.body)
        if alg_name == "ed25519":
            seed = base64.b64decode(key_spec["seed_b64"])
            private = ed25519.Ed25519PrivateKey.from_private_bytes(seed)
            algorithm = algorithms.ED25519
        elif alg_name == "hmac":
            private = base64.b64decode(key_spec["secret_b64"])
            algorithm = algorithms.HMAC_SHA256
        else:
            raise SystemExit("unknown key type %r" % alg_name)
        keyid = key_spec["keyid"]
        resolver = MappingKeyResolver(public_keys={}, private_keys={keyid: private})
        signer = HTTPMessageSigner(signature_algorithm=algorithm, key_resolver=resolver)
        components = inp.get("components") or (PROFILE_POST if req.body is not None else PROFILE_GET)
        kwargs = dict(
            key_id=keyid,
            created=utc(inp["created"]),
            nonce=inp["nonce"],
            label=inp.get("label", "py"),
            include_alg=inp.get("include_alg", True),
            covered_component_ids=components,
            use_existing_digest=has_header(req.headers, "content-digest"),
        )
        if inp.get("expires") is not None:
            kwargs["expires"] = utc(inp["expires"])
        # prepare + apply rather than sign(), so the base we report is the
        # very one that was signed.
        prepared = signer.prepare(req, **kwargs)
        raw = algorithm(private_key=private).sign(prepared.signature_base)
        signer.apply(req, prepared, raw)
        headers = {k: v for k, v in req.headers.items() if k.lower() in ("signature-input", "signature", "content-digest")}
        out[algorithm.algorithm_id] = {
            "headers": headers,
            "signature_base": prepared.signature_base.decode("ascii"),
        }
    return out


def verify(inp):
    req = Request(inp["request"])
    keys = inp["keys"]
    if inp["alg"] == "ed25519":
        spec = keys["ed25519"]
        public = ed25519.Ed25519PublicKey.from_public_bytes(base64.b64decode(spec["public_b64"]))
        algorithm = algorithms.ED25519
    else:
        spec = keys["hmac"]
        public = base64.b64decode(spec["secret_b64"])
        algorithm = algorithms.HMAC_SHA256
    resolver = MappingKeyResolver(public_keys={spec["keyid"]: public}, private_keys={})
    verifier = HTTPMessageVerifier(signature_algorithm=algorithm, key_resolver=resolver)
    try:
        results = verifier.verify(
            req,
            max_age=datetime.timedelta(seconds=inp.get("max_age", 60)),
            require_components=inp.get("require_components", ()),
            body=req.body,
        )
    except Exception as e:  # report any refusal as data
        return {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}, 1
    r = results[0]
    return {
        "ok": True,
        "label": r.label,
        "covered": list(r.covered_components.keys()),
        "params": {k: v for k, v in r.parameters.items()},
    }, 0


def main():
    inp = json.load(sys.stdin)
    if inp.get("mode", "sign") == "sign":
        json.dump(sign(inp), sys.stdout)
        code = 0
    else:
        res, code = verify(inp)
        json.dump(res, sys.stdout)
    sys.stdout.write("\n")
    sys.exit(code)


if __name__ == "__main__":
    main()
