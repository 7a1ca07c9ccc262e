"""A tiny webhook receiver for trying timer-controller out.

Prints one line per webhook with its id, timestamp, body and whether its
Standard Webhooks signature verified. Answers 200, or 401 when a signature
fails. Without WEBHOOK_SECRET it verifies nothing and answers 200.

    WEBHOOK_SECRET=whsec_... python examples/receiver.py --port 8080
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def is_verified(verifiers: list[Webhook], body: bytes, headers: dict[str, str]) -> bool:
    for verifier in verifiers:
        try:
            verifier.verify(body, headers, json_parse=False)
        # ValueError covers a malformed signature header and a non-UTF-8 body,
        # which the library lets escape instead of WebhookVerificationError.
        except (WebhookVerificationError, ValueError):
            continue
        return True
    return False


def make_handler(verifiers: list[Webhook]) -> type[BaseHTTPRequestHandler]:
    class WebhookHandler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            verified = is_verified(verifiers, body, dict(self.headers.items()))
            print(
                f"webhook id={self.headers.get('webhook-id')}"
                f" timestamp={self.headers.get('webhook-timestamp')}"
                f" verified={'yes' if verified else 'no'}"
                f" body={body.decode(errors='replace')}",
                flush=True,
            )
            self.send_response(401 if verifiers and not verified else 200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass  # the line printed per webhook replaces the default access log

    return WebhookHandler


def main() -> None:
    parser = argparse.ArgumentParser(description="Print timer-controller webhooks.")
    parser.add_argument("--host", default="0.0.0.0", help="all interfaces, for a container")
    parser.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    args = parser.parse_args()
    # Several space-separated secrets are allowed, as during a key rotation.
    verifiers = [Webhook(secret) for secret in os.environ.get("WEBHOOK_SECRET", "").split()]
    server = ThreadingHTTPServer((args.host, args.port), make_handler(verifiers))
    # As PID 1 in a container, SIGTERM is ignored unless a handler is installed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    host, port = server.server_address[:2]
    print(f"listening on http://{host!s}:{port}", flush=True)
    if not verifiers:
        print("WEBHOOK_SECRET is not set: signatures are not checked", flush=True)
    with server:
        server.serve_forever()


if __name__ == "__main__":
    main()
