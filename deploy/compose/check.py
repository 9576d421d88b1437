"""Validates docker-compose.yml against the Compose specification's JSON schema.

CI has no Docker engine, so `docker compose config` is not available; the schema is the
one the Python `docker-compose` 1.29.2 wheel ships (compose/config/compose_spec.json),
read from that wheel without installing it. The check proves it is strict first: a copy
of the file with a misspelt service key must fail.

usage: python check.py COMPOSE_FILE WHEEL
"""

import copy
import json
import sys
import zipfile

import jsonschema
import yaml


def main() -> int:
    compose_path, wheel = sys.argv[1], sys.argv[2]
    with zipfile.ZipFile(wheel) as z:
        schema = json.loads(z.read("compose/config/compose_spec.json"))
    with open(compose_path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    validator = jsonschema.Draft7Validator(schema)

    broken = copy.deepcopy(doc)
    first = next(iter(broken["services"].values()))
    first["healthckeck"] = first.pop("healthcheck", {})
    if not list(validator.iter_errors(broken)):
        print("the schema accepted a misspelt key: not a real check", file=sys.stderr)
        return 2

    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.path))
    for e in errors:
        where = "/".join(str(p) for p in e.path) or "(top level)"
        print(f"{compose_path}: {where}: {e.message}", file=sys.stderr)
    if errors:
        return 1
    print(f"{compose_path}: {len(doc['services'])} services valid against the Compose spec")
    return 0


if __name__ == "__main__":
    sys.exit(main())
