# Validates an OSCAL JSON document against NIST's OSCAL metaschema with the `oscal` package
# (PyPI), whose bundled support database works with no network: required fields, data types
# (UUIDs, dates), allowed values and cardinality. An independent second opinion beside
# compliance-trestle's models. Usage: validate_oscal.py FILE MODEL; exit 0 and "VALID" when it
# holds, else exit 1 and the errors.
import json, sys

import oscal

MODELS = {
    "assessment-results": oscal.AssessmentResults,
    "plan-of-action-and-milestones": oscal.POAM,
}

path, model = sys.argv[1], sys.argv[2]
doc = MODELS[model].load(path)
if doc is None:
    print(f"INVALID: {path} does not load as {model}")
    sys.exit(1)
valid = doc.validate()
errors = getattr(doc, "validation_errors", None) or []
if valid and not errors:
    print(f"VALID: {path} ({model}, NIST OSCAL metaschema)")
    sys.exit(0)
print(f"INVALID: {path} ({model})")
for e in errors[:20]:
    print(json.dumps(e))
sys.exit(1)
