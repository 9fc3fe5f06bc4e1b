"""Shows a Chroma behaviour the history checker allows: a count racing a
delete of its collection on ONE Chroma server (no gateway) may answer 200
with 0 although the collection held a record until it was deleted.

    python count_while_deleting.py URL [--rounds N]

URL is a Chroma server (e.g. http://127.0.0.1:8000). Each round creates a
collection with one record, counts it from a second thread while deleting
it, and prints how many counts answered 0 (Chroma 1.5.9: 6 of 1,800).
Standard library only.
"""

import argparse
import json
import threading
import time
import urllib.error
import urllib.request
import uuid

BASE = "/api/v2/tenants/default_tenant/databases/default_database"


def request(url, method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        url + BASE + path,
        data=data,
        method=method,
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--rounds", type=int, default=60)
    a = p.parse_args()
    zero = total = 0
    for _ in range(a.rounds):
        name = "race-" + uuid.uuid4().hex[:8]
        _, body = request(a.url, "POST", "/collections", {"name": name})
        cid = json.loads(body)["id"]
        request(a.url, "POST", f"/collections/{cid}/add",
                {"ids": ["a"], "embeddings": [[1.0, 2.0, 3.0]]})
        answers = []

        def count():
            for _ in range(30):
                answers.append(request(a.url, "GET", f"/collections/{cid}/count"))

        t = threading.Thread(target=count)
        t.start()
        time.sleep(0.005)
        request(a.url, "DELETE", f"/collections/{name}")
        t.join()
        total += len(answers)
        zero += sum(1 for s, b in answers if s == 200 and b.strip() == "0")
    print(f"counts={total} answered_0_while_deleting={zero}")


if __name__ == "__main__":
    main()
