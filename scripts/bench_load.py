#!/usr/bin/env python3
"""Load driver for OpenAI-compatible chat servers (Switchyard, llama-server); stdlib only.

Runs N concurrent streams; each sends `--requests` streaming chat requests one after another
(temperature 0, fixed max_tokens) and records time to first token (request sent -> first
non-empty delta) and completion tokens (from the final usage chunk when the server sends one,
else one per delta). Prints one JSON line: aggregate completion tokens/s over the wall time of
the run, median and p90 TTFT.

Every prompt starts with a distinct number, so no request reuses another's KV-cache prefix.
"""
import argparse
import http.client
import json
import statistics
import threading
import time
import urllib.parse

SHORT = "Once upon a time"
LONG_SENTENCE = ("Once upon a time, there was a little girl named Lily. She loved to play "
                 "outside in the park with her friends and her big red ball. ")


def prompt_for(kind, n):
    if kind == "short":
        return f"{n}. {SHORT}"
    return f"{n}. " + LONG_SENTENCE * 20


def one_request(url, model, prompt, max_tokens):
    parsed = urllib.parse.urlparse(url)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=600)
    body = json.dumps({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
    })
    start = time.monotonic()
    conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"HTTP {response.status}: {response.read()[:200]!r}")
    ttft = None
    deltas = 0
    usage_tokens = None
    for raw in response:
        line = raw.decode("utf-8", "replace").strip()
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            break
        event = json.loads(data)
        for choice in event.get("choices") or []:
            if (choice.get("delta") or {}).get("content"):
                deltas += 1
                if ttft is None:
                    ttft = time.monotonic() - start
        if event.get("usage"):
            usage_tokens = event["usage"].get("completion_tokens")
    conn.close()
    return ttft, usage_tokens if usage_tokens is not None else deltas


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--model", default="auto")
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--requests", type=int, default=4, help="per stream")
    parser.add_argument("--prompt", choices=["short", "long"], default="short")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--label", default="")
    args = parser.parse_args()

    ttfts, tokens, errors = [], [], []
    lock = threading.Lock()

    def stream(index):
        for i in range(args.requests):
            try:
                ttft, n = one_request(args.url, args.model,
                                      prompt_for(args.prompt, index * 1000 + i), args.max_tokens)
            except Exception as error:  # noqa: BLE001 - reported, not hidden
                with lock:
                    errors.append(str(error))
                continue
            with lock:
                if ttft is not None:
                    ttfts.append(ttft)
                tokens.append(n)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(args.concurrency)]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - start
    ttfts.sort()
    print(json.dumps({
        "label": args.label,
        "concurrency": args.concurrency,
        "prompt": args.prompt,
        "requests": len(tokens),
        "errors": len(errors),
        "completion_tokens": sum(tokens),
        "wall_seconds": round(wall, 3),
        "tokens_per_second": round(sum(tokens) / wall, 1) if wall > 0 else 0,
        "ttft_median_ms": round(1000 * statistics.median(ttfts), 1) if ttfts else None,
        "ttft_p90_ms": round(1000 * ttfts[int(0.9 * (len(ttfts) - 1))], 1) if ttfts else None,
    }))


if __name__ == "__main__":
    main()
