# A real HTTP server for the proxy tests: answers every request with JSON describing what it
# received (method, path, headers, body length and SHA-256), so a test can check what the gateway
# forwarded. /slow sleeps first; /status/<n> answers with that status. GET /__received lists the
# method and path of every other request it has received, in order. Every method is answered
# (PURGE, MOVE, lowercase `delete`, ...), as a permissive framework would, so a test sees any
# request the gateway lets through.
import hashlib, http.server, json, socketserver, sys, threading, time

RECEIVED = []
LOCK = threading.Lock()

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self):
        if self.command == "GET" and self.path == "/__received":
            with LOCK:
                out = json.dumps(RECEIVED).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(out)))
            self.end_headers()
            self.wfile.write(out)
            return
        with LOCK:
            RECEIVED.append({"method": self.command, "path": self.path})
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            body = b"".join(chunks)
        if self.path.startswith("/slow"):
            time.sleep(3)
        status = 200
        if self.path.startswith("/status/"):
            status = int(self.path.split("/")[2].split("?")[0])
        out = json.dumps({
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "bodyLength": len(body),
            "bodySha256": hashlib.sha256(body).hexdigest(),
        }).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.send_header("X-Upstream", "yes")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(out)

    def __getattr__(self, name):
        if name.startswith("do_"):
            return self._answer
        raise AttributeError(name)

    def log_message(self, *args):
        pass

class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True

server = Server(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
