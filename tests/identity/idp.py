"""A tiny identity provider for tests: real RSA and EC keys, a JWKS served over HTTP on 127.0.0.1,
and tokens minted (or forged) on demand. Nothing here touches the network beyond loopback."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

ISSUER = "https://idp.test/"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64_json(value: Any) -> str:
    return b64(json.dumps(value, separators=(",", ":")).encode())


@dataclass
class SigningKey:
    kid: str
    alg: str
    private: Any

    def public_jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            jwk = jwt.algorithms.RSAAlgorithm.to_jwk(public, as_dict=True)
        else:
            jwk = jwt.algorithms.ECAlgorithm.to_jwk(public, as_dict=True)
        return {**jwk, "kid": self.kid, "use": "sig", "alg": self.alg}

    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


@dataclass
class JwksState:
    """What the JWKS endpoint does; tests flip it while a server is running."""

    published: list[str] = field(default_factory=list)
    mode: str = "ok"  # ok | down (HTTP 503) | slow (sleeps `delay_s`) | garbage (not JSON)
    delay_s: float = 5.0
    hits: int = 0


class TestIdP:
    """Keys rsa-1 (RS256) and ec-1 (ES256) are published; rsa-2 is not, until a test rotates it in."""

    __test__ = False

    def __init__(self) -> None:
        self.keys = {
            "rsa-1": SigningKey("rsa-1", "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
            "ec-1": SigningKey("ec-1", "ES256", ec.generate_private_key(ec.SECP256R1())),
            "rsa-2": SigningKey("rsa-2", "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048)),
        }
        self.state = JwksState(published=["rsa-1", "ec-1"])
        self.audience = "https://bastion.test/mcp"

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.keys[kid].public_jwk() for kid in self.state.published]}

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER,
            "aud": [self.audience, "https://other.test/"],
            "azp": "analyst-bot",
            "sub": "alice@example.com",
            "email": "alice@example.com",
            "scope": "bastion:read bastion:query",
            "groups": ["bastion-analytics", "unrelated"],
            "iat": now,
            "exp": now + 600,
            "jti": uuid.uuid4().hex,
        }
        claims.update(overrides)
        return {k: v for k, v in claims.items() if v is not None}

    def token(
        self, *, key: str = "rsa-1", alg: str | None = None, headers: dict[str, Any] | None = None, **claims: Any
    ) -> str:
        signing = self.keys[key]
        return jwt.encode(
            self.claims(**claims),
            signing.private,
            algorithm=alg or signing.alg,
            headers={"kid": signing.kid, **(headers or {})},
        )

    # -- forgeries ----------------------------------------------------------------------------------

    def unsigned(self, **claims: Any) -> str:
        return f"{b64_json({'alg': 'none', 'typ': 'JWT'})}.{b64_json(self.claims(**claims))}."

    def hs256_with_public_key(self, **claims: Any) -> str:
        """The algorithm-confusion attack: an HMAC keyed with the issuer's public key."""
        signing_input = f"{b64_json({'alg': 'HS256', 'typ': 'JWT', 'kid': 'rsa-1'})}.{b64_json(self.claims(**claims))}"
        mac = hmac.new(self.keys["rsa-1"].public_pem(), signing_input.encode(), hashlib.sha256).digest()
        return f"{signing_input}.{b64(mac)}"

    def tampered(self) -> str:
        header, _, signature = self.token().split(".")
        return f"{header}.{b64_json(self.claims(azp='admin-bot'))}.{signature}"

    def with_header(self, header: dict[str, Any]) -> str:
        """A valid token whose JOSE header is replaced (so its signature no longer matches)."""
        _, payload, signature = self.token().split(".")
        return f"{b64_json(header)}.{payload}.{signature}"

    def huge_header(self) -> str:
        return self.token(headers={"x-padding": "a" * 6000})


class _Handler(BaseHTTPRequestHandler):
    idp: TestIdP

    def do_GET(self) -> None:
        state = self.idp.state
        state.hits += 1
        if state.mode == "slow":
            time.sleep(state.delay_s)
        if state.mode == "down":
            self.send_response(503)
            self.end_headers()
            return
        body = b"<html>oops</html>" if state.mode == "garbage" else json.dumps(self.idp.jwks()).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class JwksServer:
    idp: TestIdP
    url: str


def serve_jwks(idp: TestIdP) -> Iterator[JwksServer]:
    """The IdP's JWKS at http://127.0.0.1:PORT/keys, in a thread, for the duration of a fixture."""
    handler = type("Handler", (_Handler,), {"idp": idp})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield JwksServer(idp, f"http://127.0.0.1:{httpd.server_address[1]}/keys")
    finally:
        httpd.shutdown()
        httpd.server_close()
