"""The CDK app: ``cd infra && npx cdk synth`` (``-c Name=value`` for any of the stack's settings).

Synthesizes one stack, ``Heron`` (``-c StackName=...`` to rename it), with no context lookups,
so it works offline and with dummy credentials.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `stores` and `infra` import from the repository root
    sys.path.insert(0, str(ROOT))

import aws_cdk as cdk  # noqa: E402

from infra.heron_stack import HeronStack, Settings  # noqa: E402


def main() -> None:
    app = cdk.App()
    settings = Settings.from_context(
        {name: app.node.try_get_context(name) for name in Settings.__dataclass_fields__}
    )
    HeronStack(
        app,
        app.node.try_get_context("StackName") or "Heron",
        settings=settings,
        description="Heron: durable workflows as plain async Python on AWS Lambda (CDK)",
    )
    app.synth()


if __name__ == "__main__":
    main()
