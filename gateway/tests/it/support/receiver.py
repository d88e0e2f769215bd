# A real receiver for the tests that watch what the gateway sends out: alert webhooks (Slack,
# PagerDuty and signed webhooks) and OTLP/HTTP trace exports. Every POST is recorded: path,
# Content-Type, the alert headers, and the body (parsed when it is JSON, base64 otherwise).
# Given a secret on the command line it checks X-MeshGuard-Signature itself, with Python's own
# hmac module. GET /received answers what it recorded; POST /fail answers 500, for retry tests;
# POST /redirect?to=URL answers 307 to URL, as a receiver bouncing a signed alert elsewhere would.
import base64, hashlib, hmac, http.server, json, socketserver, sys, threading

SECRET = sys.argv[1].encode() if len(sys.argv) > 1 else None
received = []
lock = threading.Lock()

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        content_type = self.headers.get("Content-Type") or ""
        record = {
            "path": self.path,
            "contentType": content_type,
            "trigger": self.headers.get("X-MeshGuard-Trigger"),
            "event": self.headers.get("X-MeshGuard-Event"),
            "body": json.loads(body or b"null") if "json" in content_type
            else base64.b64encode(body).decode(),
        }
        if SECRET is not None:
            sig = self.headers.get("X-MeshGuard-Signature", "")
            expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
            record["signature"] = sig
            record["signatureValid"] = hmac.compare_digest(sig, expected)
        with lock:
            received.append(record)
        if self.path.startswith("/redirect?to="):
            self.send_response(307)
            self.send_header("Location", self.path.split("=", 1)[1])
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        status = 500 if self.path.startswith("/fail") else 200
        self.send_response(status)
        # An empty answer of the request's own type (OTLP exporters expect protobuf back).
        self.send_header("Content-Type", content_type or "text/plain")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        with lock:
            out = json.dumps(received).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass

class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

server = Server(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
