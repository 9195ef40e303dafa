"""The resources AWS's own SAM translator makes of SAM templates: the oracle for the sandbox's
SAM expansion (tests/lua/test_sandbox_oracles.lua).

  python3 sam_resources.py < [{"name": ..., "template": {...}}, ...]
  -> {"NAME": {"resources": {"LogicalId": "AWS::Type", ...}} | {"error": "..."}, ...}

No network: the managed-policy map is a fake that names any policy, and the region is fixed.
Exits 77 with one line on stderr when samtranslator is not importable.
"""
import json
import os
import sys

os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ["AWS_EC2_METADATA_DISABLED"] = "true"

try:
    from samtranslator.translator.transform import transform
    from samtranslator.model.exceptions import InvalidDocumentException
except ImportError as e:  # the oracle is missing: the caller skips, visibly
    print(f"samtranslator is not importable by {sys.executable}: {e}", file=sys.stderr)
    sys.exit(77)


class FakeManagedPolicies:
    """What samtranslator asks IAM for, answered without asking: any name is a managed policy."""

    def load(self):
        return PolicyMap()


class PolicyMap(dict):
    def get(self, name, default=None):
        return f"arn:aws:iam::aws:policy/{name}"


def resources_of(template):
    out = transform(template, {"AWS::Region": "us-east-1", "AWS::AccountId": "123456789012"}, FakeManagedPolicies())
    return {logical: res.get("Type") for logical, res in out.get("Resources", {}).items()}


def main():
    cases = json.load(sys.stdin)
    answers = {}
    for case in cases:
        try:
            answers[case["name"]] = {"resources": resources_of(case["template"])}
        except InvalidDocumentException as e:
            answers[case["name"]] = {"error": "\n".join(c.message for c in e.causes)}
        except Exception as e:  # noqa: BLE001 - any failure is reported for that template alone
            answers[case["name"]] = {"error": f"{type(e).__name__}: {e}"}
    json.dump(answers, sys.stdout, sort_keys=True)


if __name__ == "__main__":
    main()
