"""Checks pipelet's webhook signatures with PyPI's `standardwebhooks`, an implementation
independent of pipelet's (crates/pipelet-server/tests/webhooks.rs runs it).

Usage: verify_webhook.py CASES.json, where the file holds
{"cases": [{"secret": "whsec_...", "body": "...", "headers": {...}, "valid": true}]}.
Each case must verify (valid) or be refused (not valid); prints one line per case and
exits 1 if any case does not come out as expected.
"""

import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as f:
        cases = json.load(f)["cases"]
    bad = 0
    for n, case in enumerate(cases):
        try:
            Webhook(case["secret"]).verify(case["body"], case["headers"])
            verified = True
            why = "verified"
        except WebhookVerificationError as e:
            verified = False
            why = f"refused: {e}"
        ok = verified == case["valid"]
        bad += 0 if ok else 1
        print(f"case {n}: {'ok' if ok else 'WRONG'} ({why}; expected valid={case['valid']})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
