#!/usr/bin/env python3
"""The customer's webhook endpoint for the end-to-end tests: an HTTPS server (standard library only).

Started by tests/e2e/common/receiver.rs as a child process. It checks the webhook contract independently of the
Rust code, the way the ClickTerm guide's sample receiver does it: POST, Content-Type application/json,
X-Clickterm-Timestamp (Unix seconds, at most 300 s from now) and
X-Clickterm-Signature: sha256=<hex HMAC-SHA256(secret, "{timestamp}.{rawBody}")>, compared with
hmac.compare_digest.

Every request is appended as one JSON line to the --log file (flushed at once), before it is answered, so
the test can read what arrived at any time. The path selects the behaviour:

  /ok (and any path not listed)  200 {"received": true} if the signature is valid, else 401
  /status/NNN                    status NNN with a short body (none for 204/304; 3xx get a Location)
  /redirect                      302 to /redirect-target
  /redirect-target               200
  /hang                          reads the request, never answers
  /trickle                       200 without Content-Length, then one byte every 0.2 s forever
  /huge                          200 with a 50 MB body, streamed
  /slow/MS                       waits MS milliseconds, then 200

The secret comes from the CLICKTERM_WEBHOOK_SECRET environment variable (not argv, so it is not visible in
the process list). The process exits on its own when its parent (the test binary) goes away.
"""

import argparse
import hashlib
import hmac
import json
import os
import re
import socket
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MAX_SKEW_SECONDS = 300
HUGE_BYTES = 50 * 1000 * 1000
CHUNK = 64 * 1024

SECRET = b""
LOG_FILE = None
LOG_LOCK = threading.Lock()


def record(entry):
    line = json.dumps(entry, separators=(",", ":")) + "\n"
    with LOG_LOCK:
        LOG_FILE.write(line)
        LOG_FILE.flush()


def check_contract(method, headers, raw_body):
    """Returns (signature_valid, errors): the signature check of the guide, and every contract violation."""
    errors = []
    if method != "POST":
        errors.append(f"method {method} is not POST")
    content_type = headers.get("content-type")
    if content_type is None:
        errors.append("no Content-Type")
    elif content_type.split(";")[0].strip().lower() != "application/json":
        errors.append(f"Content-Type {content_type!r} is not application/json")

    signature_valid = False
    timestamp = headers.get("x-clickterm-timestamp")
    signature = headers.get("x-clickterm-signature")
    if timestamp is None:
        errors.append("no X-Clickterm-Timestamp")
    if signature is None:
        errors.append("no X-Clickterm-Signature")
    if not SECRET:
        errors.append("the receiver has no secret")
    if timestamp is not None and signature is not None and SECRET:
        if re.fullmatch(r"[0-9]{1,12}", timestamp) is None:
            errors.append(f"X-Clickterm-Timestamp {timestamp!r} is not Unix seconds")
        else:
            skew = abs(int(time.time()) - int(timestamp))
            digest = hmac.new(SECRET, timestamp.encode("utf-8") + b"." + raw_body, hashlib.sha256).hexdigest()
            expected = f"sha256={digest}"
            matches = hmac.compare_digest(signature.encode("utf-8", "replace"), expected.encode("utf-8"))
            if not matches:
                errors.append("X-Clickterm-Signature does not match")
            if skew > MAX_SKEW_SECONDS:
                errors.append(f"X-Clickterm-Timestamp is {skew} s from now (more than {MAX_SKEW_SECONDS})")
            signature_valid = matches and skew <= MAX_SKEW_SECONDS
    return signature_valid, errors


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "receiver"
    sys_version = ""

    def setup(self):
        super().setup()
        # The TLS handshake runs here, on the connection's own thread, so a client that never finishes it
        # cannot block the accept loop.
        self.request.settimeout(10)
        self.request.do_handshake()
        self.request.settimeout(None)

    def log_message(self, format, *args):  # noqa: A002 - the base class's signature
        pass

    def read_body(self):
        length = self.headers.get("Content-Length")
        if length is not None:
            return self.rfile.read(int(length))
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        return b""

    def send(self, status, body=b"", content_type="application/json", extra=()):
        self.send_response(status)
        for name, value in extra:
            self.send_header(name, value)
        no_body = status in (204, 304) or status < 200
        if not no_body:
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not no_body and self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        at = time.time()
        raw_body = self.read_body()
        headers = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        signature_valid, errors = check_contract(self.command, headers, raw_body)
        route = self.path.split("?", 1)[0]
        record(
            {
                "method": self.command,
                "path": self.path,
                "headers": headers,
                "body": raw_body.decode("utf-8", "replace"),
                "at": at,
                "signature_valid": signature_valid,
                "contract_errors": errors,
                "remote": f"{self.client_address[0]}:{self.client_address[1]}",
                "sni": getattr(self.request, "receiver_sni", None),
            }
        )

        if route == "/hang":
            self.close_connection = True
            while True:
                time.sleep(3600)
        elif route == "/trickle":
            self.close_connection = True
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Connection", "close")
            self.end_headers()
            while True:
                self.wfile.write(b".")
                self.wfile.flush()
                time.sleep(0.2)
        elif route == "/huge":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(HUGE_BYTES))
            self.end_headers()
            chunk = b"x" * CHUNK
            left = HUGE_BYTES
            while left > 0:
                n = min(left, CHUNK)
                self.wfile.write(chunk[:n])
                left -= n
        elif route == "/redirect":
            self.send(302, b'{"redirect": "/redirect-target"}', extra=[("Location", "/redirect-target")])
        elif route == "/redirect-target":
            self.send(200, b'{"redirectTarget": true}')
        elif route.startswith("/status/"):
            code = route[len("/status/") :]
            if re.fullmatch(r"[1-5][0-9][0-9]", code) is None or int(code) < 200:
                self.send(400, b'{"error": "status must be 200..599"}')
                return
            status = int(code)
            extra = [("Location", "/redirect-target")] if 300 <= status < 400 and status != 304 else []
            self.send(status, json.dumps({"status": status}).encode(), extra=extra)
        elif route.startswith("/slow/"):
            ms = route[len("/slow/") :]
            if not ms.isdigit():
                self.send(400, b'{"error": "milliseconds must be digits"}')
                return
            time.sleep(int(ms) / 1000)
            self.send(200, b'{"received": true}')
        elif not signature_valid:
            self.send(401, json.dumps({"errors": errors}).encode())
        elif errors:
            self.send(400, json.dumps({"errors": errors}).encode())
        else:
            self.send(200, b'{"received": true}')

    do_POST = do_GET = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = handle_any


def make_server(bind, port, context):
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET

    class Server(ThreadingHTTPServer):
        address_family = family
        daemon_threads = True
        block_on_close = False
        request_queue_size = 128

        def get_request(self):
            sock, addr = self.socket.accept()
            return context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

        def handle_error(self, request, client_address):
            # Clients going away (timeouts, dropped bodies, failed handshakes) are expected; anything else
            # goes to standard error, which the Rust side keeps in a file.
            error = sys.exc_info()[1]
            if not isinstance(error, (OSError, ssl.SSLError, ValueError)):
                super().handle_error(request, client_address)

    return Server((bind, port), Handler)


def watch_parent(parent):
    while True:
        if os.getppid() != parent:
            os._exit(0)
        time.sleep(0.5)


def main():
    global SECRET, LOG_FILE
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--cert", required=True, help="PEM certificate chain, leaf first")
    parser.add_argument("--key", required=True, help="PEM private key")
    parser.add_argument("--log", required=True, help="JSON lines file the requests are appended to")
    args = parser.parse_args()

    SECRET = os.environ.get("CLICKTERM_WEBHOOK_SECRET", "").encode("utf-8")
    LOG_FILE = open(args.log, "a", encoding="utf-8")

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    context.set_alpn_protocols(["http/1.1"])

    def on_sni(sslsock, server_name, _context):
        sslsock.receiver_sni = server_name

    context.sni_callback = on_sni

    try:
        server = make_server(args.bind, args.port, context)
    except OSError as e:
        print(f"receiver: cannot bind {args.bind}:{args.port}: {e}", file=sys.stderr, flush=True)
        sys.exit(3)

    threading.Thread(target=watch_parent, args=(os.getppid(),), daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
