#!/usr/bin/env python3
"""Prepends HOURS of normal history to a scenario's telemetry: copies of its first hour
(metrics and log lines, before anything happens) shifted back by 1..HOURS hours.

The streaming detector judges a point against the series' own score history, which
takes a few hundred points to settle; a recording that starts an hour before its incident
is too short for it. Usage: prepend_history.py SCENARIO_DIR [HOURS]
"""
import datetime as dt
import gzip
import json
import sys

folder = sys.argv[1]
hours = int(sys.argv[2]) if len(sys.argv) > 2 else 4
path = f"{folder}/telemetry.jsonl.gz"
with gzip.open(path, "rt") as f:
    lines = [json.loads(line) for line in f if line.strip()]
settings = [r for r in lines if "settings" in r]
records = [r for r in lines if "settings" not in r]


def parse(at):
    return dt.datetime.strptime(at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.timezone.utc)


def fmt(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


start = min(parse(r["at"]) for r in records)
first_hour = [r for r in records if parse(r["at"]) < start + dt.timedelta(hours=1)]
history = []
for k in range(hours, 0, -1):
    for r in first_hour:
        copy = dict(r)
        copy["at"] = fmt(parse(r["at"]) - dt.timedelta(hours=k))
        history.append(copy)
with gzip.open(path, "wt") as f:
    for r in settings + history + records:
        f.write(json.dumps(r, separators=(",", ":")) + "\n")
