# An OTLP/HTTP trace receiver for the OpenTelemetry export test: it accepts POST /v1/traces
# (protobuf), answers 200 with an empty ExportTraceServiceResponse, records each request, and
# answers GET /received with what it recorded (bodies base64-encoded).
import base64, http.server, json, socketserver, threading

received = []
lock = threading.Lock()

class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with lock:
            received.append({
                "path": self.path,
                "contentType": self.headers.get("Content-Type"),
                "body": base64.b64encode(body).decode(),
            })
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
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
