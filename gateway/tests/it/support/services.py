# Receivers that read alert bodies as the services do, for the tests of the Slack and PagerDuty
# channels. Written from the services' public documentation of what they accept:
#
# Slack incoming webhooks (POST /services/T.../B.../...): a JSON object with `text` (the
# fallback, required by this receiver whenever blocks are sent, as Slack recommends) and
# optionally `blocks` (at most 50). A `header` block holds `plain_text` of at most 150
# characters; a `section` block's text is `mrkdwn` or `plain_text` of at most 3000. In text,
# `&`, `<` and `>` are control characters: `<!channel>`, `<!here>`, `<@U123>` notify people and
# `<url|label>` is a link, so a sender's own text must arrive escaped (&amp; &lt; &gt;). Slack
# answers 200 `ok`, or 400 with `invalid_payload`, `no_text` or `invalid_blocks`.
#
# PagerDuty Events API v2 (POST /v2/enqueue): `routing_key` (32 characters), `event_action`
# (trigger, acknowledge, resolve), `dedup_key` (at most 255), and for trigger a `payload` with
# `summary` (1 to 1024 characters), `source` (non-empty), `severity` (critical, error, warning,
# info) and `custom_details` (an object). Answers 202 with status success, or 400 with
# status "invalid event" and the errors.
#
# Every request is recorded with what the service would have made of it: GET /received.
import http.server, json, re, socketserver, sys, threading

received = []
lock = threading.Lock()

# What Slack would read as a mention, a broadcast or a link in text it renders.
CONTROL = re.compile(r"<[!@#]|<https?:|<mailto:")


def slack_errors(body):
    if not isinstance(body, dict):
        return ["invalid_payload: not a JSON object"]
    errors = []
    text = body.get("text")
    blocks = body.get("blocks")
    if not isinstance(text, str) or not text.strip():
        errors.append("no_text: a fallback text is required")
    elif len(text) > 40000:
        errors.append("invalid_payload: text over 40000 characters")
    # Text Slack parses for mentions and links: the fallback and mrkdwn (plain_text is shown
    # as written).
    rendered = [text] if isinstance(text, str) else []
    if blocks is not None:
        if not isinstance(blocks, list) or len(blocks) > 50:
            errors.append("invalid_blocks: blocks must be a list of at most 50")
            blocks = []
        for i, b in enumerate(blocks):
            kind = b.get("type") if isinstance(b, dict) else None
            t = b.get("text") if isinstance(b, dict) else None
            if kind == "header":
                if not (isinstance(t, dict) and t.get("type") == "plain_text"
                        and isinstance(t.get("text"), str) and 0 < len(t["text"]) <= 150):
                    errors.append(f"invalid_blocks: block {i}: a header is plain_text of 1 to 150 characters")
            elif kind == "section":
                if not (isinstance(t, dict) and t.get("type") in ("mrkdwn", "plain_text")
                        and isinstance(t.get("text"), str) and 0 < len(t["text"]) <= 3000):
                    errors.append(f"invalid_blocks: block {i}: a section's text is 1 to 3000 characters")
                elif t["type"] == "mrkdwn":
                    rendered.append(t["text"])
            elif kind == "divider":
                pass
            else:
                errors.append(f"invalid_blocks: block {i}: unknown type {kind!r}")
    for r in rendered:
        if CONTROL.search(r):
            errors.append(f"unescaped control sequence (a mention or a link) in {r[:80]!r}")
    return errors


def pagerduty_errors(body):
    if not isinstance(body, dict):
        return ["Event object is invalid: not a JSON object"]
    errors = []
    key = body.get("routing_key")
    if not isinstance(key, str) or len(key) != 32:
        errors.append("'routing_key' must be 32 characters")
    action = body.get("event_action")
    if action not in ("trigger", "acknowledge", "resolve"):
        errors.append("'event_action' must be trigger, acknowledge or resolve")
    dedup = body.get("dedup_key")
    if dedup is not None and (not isinstance(dedup, str) or len(dedup) > 255):
        errors.append("'dedup_key' must be a string of at most 255 characters")
    if action == "trigger":
        p = body.get("payload")
        if not isinstance(p, dict):
            errors.append("'payload' is required for trigger")
        else:
            s = p.get("summary")
            if not isinstance(s, str) or not 0 < len(s) <= 1024:
                errors.append("'payload.summary' must be 1 to 1024 characters")
            if not isinstance(p.get("source"), str) or not p.get("source"):
                errors.append("'payload.source' is required")
            if p.get("severity") not in ("critical", "error", "warning", "info"):
                errors.append("'payload.severity' must be critical, error, warning or info")
            cd = p.get("custom_details")
            if cd is not None and not isinstance(cd, dict):
                errors.append("'payload.custom_details' must be an object")
    return errors


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        if self.path.startswith("/services/"):
            service, errors = "slack", slack_errors(body)
            if not (self.headers.get("Content-Type") or "").startswith("application/json"):
                errors.append("invalid_payload: not application/json")
            status = 400 if errors else 200
            answer, kind = ((errors[0].split(":")[0] if errors else "ok").encode(), "text/plain")
        elif self.path == "/v2/enqueue":
            service, errors = "pagerduty", pagerduty_errors(body)
            status = 400 if errors else 202
            answer = json.dumps(
                {"status": "invalid event", "message": "Event object is invalid", "errors": errors}
                if errors else
                {"status": "success", "message": "Event processed", "dedup_key": body.get("dedup_key")}
            ).encode()
            kind = "application/json"
        else:
            service, errors, status, answer, kind = "unknown", ["no such service path"], 404, b"", "text/plain"
        with lock:
            received.append({"service": service, "path": self.path, "status": status,
                             "errors": errors, "body": body})
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

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
