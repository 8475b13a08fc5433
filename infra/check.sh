#!/usr/bin/env bash
# Proves the deployable stack offline: `sam validate --lint`, `cfn-lint`, `sam build`, `cdk synth`
# (with dummy credentials, no lookups), then cfn-lint on what CDK wrote; then the same for a
# project that `heron init --cdk` writes (and that project's own tests). Installs what is missing:
#   - the SAM CLI and cfn-lint in a virtualenv of their own ($SAM_VENV, default /opt/sam):
#     the SAM CLI pins boto3, which clashes with aioboto3's pin in the project's venv;
#   - the CDK CLI from infra/package-lock.json (`npm ci`, into infra/node_modules);
#   - aws-cdk-lib in the project's venv ($PYTHON, default .venv/bin/python), from the `infra` extra.
# Prints every command it runs; exits non-zero on the first failure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"

SAM_VENV="${SAM_VENV:-/opt/sam}"
PYTHON="${PYTHON:-.venv/bin/python}"
[ -x "$PYTHON" ] || PYTHON="$(command -v python3)"
PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")"

# Nothing here talks to AWS: dummy credentials, a fixed account and region.
export AWS_ACCESS_KEY_ID=dummy AWS_SECRET_ACCESS_KEY=dummy AWS_SESSION_TOKEN=dummy
export AWS_DEFAULT_REGION=us-east-1 AWS_REGION=us-east-1 CDK_DEFAULT_ACCOUNT=123456789012
export CDK_DEFAULT_REGION=us-east-1 SAM_CLI_TELEMETRY=0 CDK_DISABLE_CLI_TELEMETRY=true
# `sam build` needs a python3.13 on PATH for the python3.13 runtime; pyenv provides it here.
export PYENV_VERSION="${PYENV_VERSION:-3.11.7:3.12.1:3.13.0}"
# jsii and the CDK CLI warn on every start that this machine's node 20 is past its end of life.
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20
export JSII_SILENCE_WARNING_UNTESTED_NODE_VERSION=1 NODE_NO_WARNINGS=1

run() {
    printf '\n+ %s\n' "$*"
    "$@"
}

# -- tools ---------------------------------------------------------------------------------------
if [ ! -x "$SAM_VENV/bin/sam" ] || [ ! -x "$SAM_VENV/bin/cfn-lint" ]; then
    run python3 -m venv "$SAM_VENV"
    run "$SAM_VENV/bin/pip" install -q --disable-pip-version-check "aws-sam-cli>=1.140,<2" \
        "cfn-lint>=1.30,<2"
fi
locked="$(node -p "require('./infra/package-lock.json').packages['node_modules/aws-cdk'].version")"
installed="$(node -p "require('./infra/node_modules/aws-cdk/package.json').version" 2>/dev/null || true)"
if [ "$installed" != "$locked" ] || [ ! -x infra/node_modules/.bin/cdk ]; then
    run npm ci --prefix infra --no-audit --no-fund --loglevel=error
fi
if ! "$PYTHON" -c 'import aws_cdk, constructs, yaml' 2>/dev/null; then
    run "$PYTHON" -m pip install -q --disable-pip-version-check -e '.[infra]'
fi
command -v python3.13 >/dev/null || {
    echo "check.sh: sam build needs python3.13 on PATH (PYENV_VERSION=$PYENV_VERSION)" >&2
    exit 1
}

run "$SAM_VENV/bin/sam" --version
run "$SAM_VENV/bin/cfn-lint" --version
run infra/node_modules/.bin/cdk --version

# -- the SAM template ----------------------------------------------------------------------------
run "$SAM_VENV/bin/sam" validate --lint --template template.yaml
run "$SAM_VENV/bin/cfn-lint" template.yaml
run "$SAM_VENV/bin/sam" build --template template.yaml --no-cached

# -- the CDK app -----------------------------------------------------------------------------------
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
(
    cd infra
    run node_modules/.bin/cdk synth --app "$PYTHON app.py" --output "$out" --no-notices \
        --quiet
)
# CDK adds a DependsOn on each function's role that its Role property already implies (W3005).
run "$SAM_VENV/bin/cfn-lint" --ignore-checks W3005 -- "$out/Heron.template.json"

# -- a project of one's own: what `heron init --cdk` writes --------------------------------------
project="$out/shop"
run "$(dirname "$PYTHON")/heron" init "$project" --cdk
(
    cd "$project"
    run "$SAM_VENV/bin/sam" validate --lint --template template.yaml
    run "$SAM_VENV/bin/sam" build --template template.yaml --no-cached
    run "$PYTHON" -m pytest -q -p no:cacheprovider
    cd infra
    run "$ROOT/infra/node_modules/.bin/cdk" synth --app "$PYTHON app.py" \
        --output "$out/shop-cdk" --no-notices --quiet
)
run "$SAM_VENV/bin/cfn-lint" --ignore-checks W3005 -- "$out/shop-cdk/shop.template.json"

printf '\ninfra/check.sh: sam validate --lint, cfn-lint, sam build and cdk synth passed, for\n'
printf 'this repository and for a project made by heron init\n'
