#!/usr/bin/env python3
"""Writes log_sample.tsv: 2,000 service log lines from 24 known templates.

Each line is `TEMPLATE_ID<TAB>LINE`. The templates are typical of Kubernetes services
(HTTP access, database, cache, kubelet, Go/Java/Python crashes); variables are numbers,
IPs, UUIDs, hex ids, durations and words from small vocabularies. Written for Aegis and
redistributable with it (Apache-2.0). Deterministic: `python3 gen_log_sample.py`.
"""
import random
import uuid

rng = random.Random(20261130)
ip = lambda: ".".join(str(rng.randint(1, 254)) for _ in range(4))
num = lambda a=0, b=100000: str(rng.randint(a, b))
dur = lambda: f"{rng.randint(1, 2000)}ms"
hexid = lambda: "%012x" % rng.getrandbits(48) + "a1"
uid = lambda: str(uuid.UUID(int=rng.getrandbits(128)))
pick = lambda *xs: rng.choice(xs)
user = lambda: pick("alice", "bob", "carol", "dave", "erin", "frank")
table = lambda: pick("orders", "users", "payments", "invoices")
path = lambda: pick("/api/v1/orders", "/api/v1/users", "/api/v1/payments", "/healthz")

TEMPLATES = [
    lambda: f"INFO http request method=GET path={path()} status=200 duration={dur()} client={ip()}",
    lambda: f"INFO http created resource path={path()} id={uid()} duration={dur()} client={ip()} user={user()}",
    lambda: f"WARN http request method=GET path={path()} status=404 duration={dur()} client={ip()}",
    lambda: f"ERROR http request method=POST path={path()} status=500 duration={dur()} client={ip()} error=upstream timeout",
    lambda: f"INFO Connected to database {table()} at {ip()}:5432 in {dur()}",
    lambda: f"ERROR Failed to connect to database at {ip()}:5432: connection refused",
    lambda: f"INFO Query on table {table()} returned {num()} rows in {dur()}",
    lambda: f"WARN Slow query on table {table()} took {dur()} (threshold 500ms)",
    lambda: f"INFO Cache hit for key session:{uid()}",
    lambda: f"INFO Cache miss for key session:{uid()} loading from backend",
    lambda: f"INFO User {user()} logged in from {ip()}",
    lambda: f"WARN User {user()} failed login attempt {num(1, 5)} from {ip()}",
    lambda: f"INFO Processing order {uid()} for customer {num()} total {num(1, 999)}.{num(10, 99)} EUR",
    lambda: f"INFO Order {uid()} shipped via {pick('dhl', 'ups', 'fedex')} tracking {hexid()}",
    lambda: f"ERROR Payment {uid()} declined by provider code {num(1000, 9999)}",
    lambda: f"INFO Worker pool resized from {num(1, 16)} to {num(1, 16)} workers",
    lambda: f"WARN Memory usage at {num(80, 99)} percent of limit {pick('512Mi', '1Gi', '2Gi')}",
    lambda: f"ERROR Container {hexid()} was OOMKilled after {num(1, 600)} seconds",
    lambda: f"WARN Back-off restarting failed container api in pod api-{hexid()}",
    lambda: f"ERROR panic: runtime error: index out of range [{num(0, 9)}] with length {num(0, 9)}",
    lambda: f"ERROR goroutine {num(1, 500)} [running]:",
    lambda: f"ERROR Exception in thread \"main\" java.lang.NullPointerException at line {num(1, 900)}",
    lambda: f"INFO Received SIGTERM shutting down gracefully in {num(1, 30)} seconds",
    lambda: f"INFO Health check passed for {pick('api', 'worker', 'billing')} replica {num(0, 9)} latency {dur()}",
]

if __name__ == "__main__":
    with open("log_sample.tsv", "w") as out:
        for _ in range(2000):
            i = rng.randrange(len(TEMPLATES))
            out.write(f"E{i + 1}\t{TEMPLATES[i]()}\n")
