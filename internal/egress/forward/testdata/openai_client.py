"""An app with the OpenAI URL hard-coded, as the forward-proxy test runs it.

Usage: openai_client.py MODE EXPECTED_PROXY
  MODE chat:    a chat completion, then a streamed one, to api.openai.com
  MODE refused: a request to example.invalid, which the proxy must refuse

Before any request the script checks that urllib resolved the https proxy
to EXPECTED_PROXY (an http://127.0.0.1:PORT address) and that nothing
bypasses it, and that the TLS context trusts exactly one CA; otherwise it
exits 3 without sending anything. It uses the standard library only.
"""

import json
import ssl
import sys
import urllib.error
import urllib.parse
import urllib.request

URL = "https://api.openai.com/v1/chat/completions"
REFUSED_URL = "https://example.invalid/"


def fail(msg):
    print("openai_client: " + msg, file=sys.stderr)
    sys.exit(3)


def checked_opener(expected, target):
    proxy = urllib.request.getproxies().get("https", "")
    if proxy != expected:
        fail("https proxy is %r, want %r" % (proxy, expected))
    parts = urllib.parse.urlsplit(proxy)
    if parts.scheme != "http" or parts.hostname != "127.0.0.1":
        fail("https proxy %r is not http://127.0.0.1:..." % proxy)
    host = urllib.parse.urlsplit(target).hostname
    if urllib.request.proxy_bypass(host):
        fail("%s would bypass the proxy" % host)
    ctx = ssl.create_default_context()
    cas = ctx.cert_store_stats()["x509_ca"]
    if cas != 1:
        fail("the TLS context trusts %d CAs, want only the sidecar's" % cas)
    return urllib.request.build_opener(
        urllib.request.ProxyHandler({"https": proxy}),
        urllib.request.HTTPSHandler(context=ctx),
    )


def post(opener, body):
    req = urllib.request.Request(
        URL,
        data=json.dumps(body).encode(),
        headers={
            "Content-Type": "application/json",
            "Authorization": "Bearer sk-placeholder",
        },
        method="POST",
    )
    return opener.open(req, timeout=30)


def chat(opener):
    with post(opener, {"model": "gpt-4o-mini",
                       "messages": [{"role": "user", "content": "hi"}]}) as resp:
        answer = json.load(resp)
    content = answer["choices"][0]["message"]["content"]
    print("chat:", content)

    events = []
    with post(opener, {"model": "gpt-4o-mini", "stream": True,
                       "messages": [{"role": "user", "content": "hi"}]}) as resp:
        for raw in resp:
            line = raw.decode().strip()
            if not line.startswith("data: "):
                continue
            data = line[len("data: "):]
            if data == "[DONE]":
                break
            delta = json.loads(data)["choices"][0]["delta"].get("content", "")
            events.append(delta)
    print("stream:", "".join(events), len(events))


def refused(opener):
    try:
        opener.open(REFUSED_URL, timeout=30)
    except urllib.error.URLError as e:
        print("refused:", e.reason)
        if "403" not in str(e.reason):
            print("openai_client: refused without a 403", file=sys.stderr)
            sys.exit(1)
        return
    print("openai_client: example.invalid was reached", file=sys.stderr)
    sys.exit(1)


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("chat", "refused"):
        fail("usage: openai_client.py chat|refused EXPECTED_PROXY")
    mode, expected = sys.argv[1], sys.argv[2]
    target = URL if mode == "chat" else REFUSED_URL
    opener = checked_opener(expected, target)
    if mode == "chat":
        chat(opener)
    else:
        refused(opener)


if __name__ == "__main__":
    main()
