"""A tiny OpenAI-shaped HTTP server for the gateway's fast policy tests (stdlib only).

It exists so that routing, keys, limits and streaming through HAProxy can be checked in seconds. It is not
a model and must never stand in for vLLM in end-to-end tests.

Run: python fake_openai_backend.py --model NAME --backend-id ID [--port 0] [--chunks 5] [--chunk-ms 50]
     [--vllm-chunks]
With --port 0 the OS picks a free port. Once listening, the server prints one JSON line to stdout,
{"port": N}, which is what a test waits for instead of polling the port.

Every response carries ``X-Backend-Id`` (which process served it), ``X-Backend-Saw-Key`` ("yes" if the
request still had an Authorization or api-key header, which the gateway must strip) and
``X-Backend-Saw-Request-Id`` (the X-Request-Id the request arrived with).

A non-streamed request with ``"fake_delay_ms": N`` in its body is answered after N ms, unless the client
(the gateway) hangs up first; GET /stats then counts it under "aborted", the way vLLM would cancel it.

With ``--vllm-chunks`` (off by default) streams are shaped like vLLM 0.32's with
--enable-force-include-usage: a chat stream opens with the role-only chunk
(``"delta": {"role": "assistant", "content": ""}``), every chunk carries the running ``usage``
(completion_tokens 0 on the role chunk, k after the k-th token), a completions stream's chunks carry
``text``, the last token's chunk has ``finish_reason`` "length", and a usage-only chunk with empty
``choices`` comes before ``[DONE]``. The role chunk is sent at once and the first token one pause
(--chunk-ms) later, so a client that timed the role chunk as its first token shows it.
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

INFERENCE_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")


class FakeOpenAIHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; with Nagle on, every response waits ~40 ms for the
    # delayed ACK (measured: 44 ms instead of 0.5 ms), which would make stream timing tests meaningless.
    disable_nagle_algorithm = True

    model: ClassVar[str] = ""
    backend_id: ClassVar[str] = ""
    chunks: ClassVar[int] = 5
    chunk_seconds: ClassVar[float] = 0.05
    vllm_chunks: ClassVar[bool] = False
    counts: ClassVar[dict[str, int]] = {"served": 0, "aborted": 0}
    counts_lock: ClassVar[threading.Lock] = threading.Lock()

    def log_message(self, format: str, *args: Any) -> None:
        sys.stderr.write(f"[{self.backend_id}] {format % args}\n")

    def _common_headers(self) -> None:
        saw_key = self.headers.get("Authorization") is not None or self.headers.get("api-key") is not None
        self.send_header("X-Backend-Id", self.backend_id)
        self.send_header("X-Backend-Saw-Key", "yes" if saw_key else "no")
        self.send_header("X-Backend-Saw-Request-Id", self.headers.get("X-Request-Id", ""))

    def _count(self, outcome: str) -> None:
        with self.counts_lock:
            self.counts[outcome] += 1

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self._common_headers()
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if self.path == "/health":
            self._send_json(200, {"status": "ok"})
        elif self.path == "/stats":
            with self.counts_lock:
                self._send_json(200, dict(self.counts))
        elif self.path == "/v1/models":
            self._send_json(200, {"object": "list", "data": [{"id": self.model, "object": "model"}]})
        else:
            self._send_json(404, {"error": {"message": f"no route {self.path}", "code": "not_found"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path not in INFERENCE_PATHS:
            self._send_json(404, {"error": {"message": f"no route {self.path}", "code": "not_found"}})
            return
        try:
            request = json.loads(raw)
        except ValueError:
            self._send_json(400, {"error": {"message": "body is not JSON", "code": "bad_json"}})
            return
        if request.get("model") != self.model:
            # vLLM answers a model it does not serve with 404; a routing mistake must show up the same way.
            self._send_json(404, {"error": {"message": f"model {request.get('model')!r} not served here"}})
            return
        if request.get("stream"):
            self._stream(len(raw))
        elif self._peer_left_during(request.get("fake_delay_ms", 0) / 1000):
            self._count("aborted")
            self.close_connection = True
        elif self.path == "/v1/embeddings":
            inputs = request.get("input")
            count = len(inputs) if isinstance(inputs, list) else 1
            data = [{"index": i, "object": "embedding", "embedding": [0.5, 0.5]} for i in range(count)]
            usage = {"prompt_tokens": len(raw), "total_tokens": len(raw)}
            self._send_json(200, {"object": "list", "model": self.model, "data": data, "usage": usage})
            self._count("served")
        else:
            reply = self._completion(len(raw))
            # What the readiness gate's logprobs shapes look for; the values mean nothing.
            if request.get("logprobs"):
                reply["choices"][0]["logprobs"] = {"content": [{"token": "hello", "logprob": -0.1}]}
            if request.get("prompt_logprobs"):
                reply["choices"][0]["prompt_logprobs"] = [None, {"1": {"logprob": -0.1}}]
            self._send_json(200, reply)
            self._count("served")

    def _peer_left_during(self, seconds: float) -> bool:
        """Wait ``seconds``, watching for the peer closing the connection, as a generating server would."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            readable, _, _ = select.select([self.connection], [], [], min(left, 0.01))
            if readable:
                try:
                    if not self.connection.recv(1, socket.MSG_PEEK):
                        return True  # FIN
                except ConnectionResetError:
                    return True  # HAProxy aborts a server connection with a reset
        return False

    def _completion(self, body_bytes: int) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{self.backend_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": f"hello from {self.backend_id}"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": body_bytes, "completion_tokens": 3, "total_tokens": body_bytes + 3},
        }

    def _write_chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _stream(self, body_bytes: int) -> None:
        self.send_response(200)
        self._common_headers()
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        if self.vllm_chunks:
            self._stream_like_vllm(body_bytes)
            return
        created = int(time.time())
        for index in range(self.chunks):
            if index:
                time.sleep(self.chunk_seconds)
            event = {
                "id": f"chatcmpl-{self.backend_id}",
                "object": "chat.completion.chunk",
                "created": created,
                "model": self.model,
                "choices": [{"index": 0, "delta": {"content": f"tok{index} "}, "finish_reason": None}],
            }
            self._write_chunk(f"data: {json.dumps(event)}\n\n".encode())
        final = {
            "id": f"chatcmpl-{self.backend_id}",
            "object": "chat.completion.chunk",
            "created": created,
            "model": self.model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": body_bytes, "completion_tokens": self.chunks,
                      "total_tokens": body_bytes + self.chunks},
        }  # fmt: skip
        self._write_chunk(f"data: {json.dumps(final)}\n\n".encode())
        self._write_chunk(b"data: [DONE]\n\n")
        self._write_chunk(b"")
        self._count("served")

    def _stream_like_vllm(self, body_bytes: int) -> None:
        """The chunks vLLM 0.32 streams with --enable-force-include-usage (see the module docstring)."""
        chat = self.path == "/v1/chat/completions"
        head = {
            "id": f"chatcmpl-{self.backend_id}" if chat else f"cmpl-{self.backend_id}",
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": self.model,
        }

        def usage(done: int) -> dict[str, int]:
            return {"prompt_tokens": body_bytes, "total_tokens": body_bytes + done, "completion_tokens": done}

        def send(choices: list[dict[str, Any]], done: int) -> None:
            event = {**head, "choices": choices, "usage": usage(done)}
            self._write_chunk(f"data: {json.dumps(event)}\n\n".encode())

        if chat:
            role = {"role": "assistant", "content": ""}
            send([{"index": 0, "delta": role, "logprobs": None, "finish_reason": None}], 0)
        for index in range(self.chunks):
            if index or chat:
                time.sleep(self.chunk_seconds)
            finish = "length" if index == self.chunks - 1 else None
            text = f"tok{index} "
            if chat:
                choice = {"index": 0, "delta": {"content": text}, "logprobs": None, "finish_reason": finish}
            else:
                choice = {
                    "index": 0,
                    "text": text,
                    "logprobs": None,
                    "finish_reason": finish,
                    "stop_reason": None,
                }
            send([choice], index + 1)
        send([], self.chunks)
        self._write_chunk(b"data: [DONE]\n\n")
        self._write_chunk(b"")
        self._count("served")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--model", required=True)
    parser.add_argument("--backend-id", required=True)
    parser.add_argument("--chunks", type=int, default=5)
    parser.add_argument("--chunk-ms", type=int, default=50)
    parser.add_argument(
        "--vllm-chunks",
        action="store_true",
        help="stream as vLLM 0.32 does with --enable-force-include-usage (role chunk, usage in each chunk)",
    )
    args = parser.parse_args(argv)

    handler = type(
        "ConfiguredHandler",
        (FakeOpenAIHandler,),
        {
            "model": args.model,
            "backend_id": args.backend_id,
            "chunks": args.chunks,
            "chunk_seconds": args.chunk_ms / 1000,
            "vllm_chunks": args.vllm_chunks,
        },
    )
    server = ThreadingHTTPServer((args.host, args.port), handler)
    server.daemon_threads = True
    print(json.dumps({"port": server.server_address[1]}), flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
