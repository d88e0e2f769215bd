#!/usr/bin/env python3
# Validates CycloneDX JSON documents against the official JSON schema of the specVersion each one
# declares, offline, with the CycloneDX project's own validator (cyclonedx-python-lib with the
# json-validation extra; `cargo xtask tools` installs it into a venv).
# usage: validate-cyclonedx.py FILE.json...   prints "FILE VERSION valid" or "... INVALID: why"
import json
import sys

from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator


def check(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    version = SchemaVersion.from_version(json.loads(text)["specVersion"])
    problem = JsonStrictValidator(version).validate_str(text)
    verdict = "valid" if problem is None else "INVALID: " + str(problem)[:400]
    print(path, version.to_version(), verdict)
    return problem is None


if __name__ == "__main__":
    results = [check(p) for p in sys.argv[1:]]
    sys.exit(0 if results and all(results) else 1)
