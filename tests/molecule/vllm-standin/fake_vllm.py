"""TEST STAND-IN for vLLM's OpenAI server (see README.md): same command line, three endpoints, no model."""

import argparse
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

parser = argparse.ArgumentParser()
parser.add_argument("--model", required=True)
parser.add_argument("--served-model-name", required=True)
parser.add_argument("--host", default="0.0.0.0")
parser.add_argument("--port", type=int, required=True)
args, _ = parser.parse_known_args()
if not os.path.isdir(args.model):
    raise SystemExit(f"stand-in vLLM: model folder {args.model} is missing")


class Handler(BaseHTTPRequestHandler):
    def _send(self, code: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send(200, {})
        elif self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": args.served_model_name, "object": "model"}]})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        json.loads(self.rfile.read(length) or b"{}")
        message = {"role": "assistant", "content": "hi"}
        self._send(200, {"model": args.served_model_name, "choices": [{"index": 0, "message": message}]})


ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()
