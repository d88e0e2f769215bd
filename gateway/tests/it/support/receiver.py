# A real alert receiver for the alerting tests. It checks X-MeshGuard-Signature itself, with
# Python's own hmac module and the secret given on the command line, records every delivery,
# and answers GET /received with what it recorded. POST /fail answers 500, for retry tests.
import hashlib, hmac, http.server, json, socketserver, sys, threading

SECRET = sys.argv[1].encode()
received = []
lock = threading.Lock()

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        sig = self.headers.get("X-MeshGuard-Signature", "")
        expected = "sha256=" + hmac.new(SECRET, body, hashlib.sha256).hexdigest()
        with lock:
            received.append({
                "path": self.path,
                "signature": sig,
                "signatureValid": hmac.compare_digest(sig, expected),
                "trigger": self.headers.get("X-MeshGuard-Trigger"),
                "event": self.headers.get("X-MeshGuard-Event"),
                "body": json.loads(body or b"null"),
            })
        status = 500 if self.path.startswith("/fail") else 200
        self.send_response(status)
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
