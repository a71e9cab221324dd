"""The real Python `fal-client` against pipelet: `submit(..., webhook_url=...)`.

fal-client sends the webhook URL as `?fal_webhook=` on its create; pipelet must take it
and POST signed `acquired` and `completed` events there, while the handle's status and
result (the URLs pipelet returned) give the finished job with its `video`.

Run by scripts/fal-client-test.sh, which puts nginx with a self-signed certificate in
front of pipelet and sets FAL_QUEUE_RUN_HOST (read when fal_client is imported),
SSL_CERT_FILE and PIPELET_ADMIN_KEY. Plain Python: exits non-zero on a failure.
"""

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import fal_client

APP = "wan22-fast-t2v"
# How long the job and its webhooks may take (the preview renderer needs a few seconds).
DEADLINE_S = 60.0
MAX_BODY = 1 << 20


class Receiver(BaseHTTPRequestHandler):
    """Records every webhook POST: its path, headers and JSON body."""

    events = []
    lock = threading.Condition()

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        if length > MAX_BODY:
            self.send_response(413)
            self.end_headers()
            return
        body = self.rfile.read(length)
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        with Receiver.lock:
            Receiver.events.append(
                {"path": self.path, "headers": {k.lower(): v for k, v in self.headers.items()}, "body": payload}
            )
            Receiver.lock.notify_all()
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def events_of(job_id):
    return [e for e in Receiver.events if isinstance(e["body"], dict) and e["body"].get("jobId") == job_id]


def main():
    key = os.environ["PIPELET_ADMIN_KEY"].strip()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    receiver_url = f"http://127.0.0.1:{server.server_address[1]}/hook?from=fal-client"
    try:
        client = fal_client.SyncClient(key=key, default_timeout=30.0)
        handle = client.submit(APP, arguments={"prompt": "a boat", "duration": 1}, webhook_url=receiver_url)
        print(f"submitted {handle.request_id} (status_url {handle.status_url})")
        if not handle.status_url.startswith("https://127.0.0.1:"):
            fail(f"status_url does not go through the TLS proxy: {handle.status_url}")

        status = handle.status()
        if not isinstance(status, (fal_client.Queued, fal_client.InProgress, fal_client.Completed)):
            fail(f"unexpected first status {status!r}")
        result = handle.get(interval=0.2)
        video = result.get("video") if isinstance(result, dict) else None
        if not isinstance(video, dict) or not (video.get("url") or video.get("data_uri")):
            fail(f"the result has no video: {json.dumps(result)[:500]}")
        if not isinstance(handle.status(), fal_client.Completed):
            fail("the status after get() is not Completed")

        # The webhooks: both events for this job, each signed, at the URL given.
        deadline = time.monotonic() + DEADLINE_S
        with Receiver.lock:
            while True:
                types = [e["body"].get("eventType") for e in events_of(handle.request_id)]
                if "acquired" in types and "completed" in types:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    fail(f"webhooks for {handle.request_id}: got {types}, want acquired and completed; all: {Receiver.events}")
                Receiver.lock.wait(left)
            events = events_of(handle.request_id)
        for event in events:
            if event["path"] != "/hook?from=fal-client":
                fail(f"webhook posted to {event['path']}, not the fal_webhook URL's path")
            for header in ("webhook-id", "webhook-timestamp", "webhook-signature"):
                if not event["headers"].get(header):
                    fail(f"{event['body'].get('eventType')} webhook without {header}: {event['headers']}")
            if not event["headers"]["webhook-signature"].startswith("v1,"):
                fail(f"webhook-signature is not v1: {event['headers']['webhook-signature']}")
            if event["body"].get("webhookUrl") != receiver_url:
                fail(f"webhookUrl {event['body'].get('webhookUrl')!r} != {receiver_url!r}")
        completed = next(e for e in events if e["body"]["eventType"] == "completed")
        if not isinstance(completed["body"].get("video"), dict):
            fail(f"completed webhook without video: {completed['body']}")
        print(f"ok: {handle.request_id} completed with a video; webhooks {[e['body']['eventType'] for e in events]} signed")
    finally:
        server.shutdown()


if __name__ == "__main__":
    main()
