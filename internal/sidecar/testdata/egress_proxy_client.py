"""A Python app whose OpenAI URL is hard-coded, for the sidecar's
forward-proxy test. Standard library only.

Usage: egress_proxy_client.py EXPECTED_PROXY

It refuses to send anything (exit 3) unless urllib resolves the https proxy
to EXPECTED_PROXY, an http://127.0.0.1:PORT address, nothing bypasses that
proxy for api.openai.com, and the TLS context trusts exactly one CA (the
sidecar's, from SSL_CERT_FILE). Then it makes a chat completion and a
streamed one through the proxy and prints one JSON object with what it got.
"""

import json
import re
import ssl
import sys
import urllib.parse
import urllib.request

URL = "https://api.openai.com/v1/chat/completions"


def refuse(why):
    print("egress_proxy_client: " + why, file=sys.stderr)
    sys.exit(3)


def opener(expected):
    proxy = urllib.request.getproxies().get("https", "")
    if proxy != expected:
        refuse("https proxy is %r, want %r" % (proxy, expected))
    if not re.fullmatch(r"http://127\.0\.0\.1:[0-9]{1,5}", proxy):
        refuse("https proxy %r is not http://127.0.0.1:PORT" % proxy)
    if urllib.request.proxy_bypass(urllib.parse.urlsplit(URL).hostname):
        refuse("api.openai.com would bypass the proxy")
    ctx = ssl.create_default_context()
    cas = ctx.cert_store_stats()["x509_ca"]
    if cas != 1:
        refuse("the TLS context trusts %d CAs, want only the sidecar's" % cas)
    return urllib.request.build_opener(
        urllib.request.ProxyHandler({"https": proxy}),
        urllib.request.HTTPSHandler(context=ctx),
    )


def post(op, stream):
    body = {"model": "gpt-4o-mini", "stream": stream,
            "messages": [{"role": "user", "content": "hello there"}]}
    req = urllib.request.Request(
        URL, data=json.dumps(body).encode(), method="POST",
        headers={"Content-Type": "application/json",
                 "Authorization": "Bearer sk-placeholder-not-a-key"})
    return op.open(req, timeout=30)


def main():
    if len(sys.argv) != 2:
        refuse("usage: egress_proxy_client.py EXPECTED_PROXY")
    op = opener(sys.argv[1])
    out = {}

    with post(op, False) as resp:
        answer = json.load(resp)
    out["plain"] = {"content": answer["choices"][0]["message"]["content"],
                    "usage": answer["usage"]}

    content, usage_chunks = [], 0
    with post(op, True) as resp:
        for raw in resp:
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue
            data = line[len("data: "):]
            if data == "[DONE]":
                break
            event = json.loads(data)
            if event.get("usage"):
                usage_chunks += 1
            for choice in event.get("choices", []):
                content.append(choice.get("delta", {}).get("content") or "")
    out["stream"] = {"content": "".join(content), "usage_chunks": usage_chunks}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
