"""``template.yaml`` against the store's table definition, the code it deploys, and itself.

The table's keys, indexes, TTL attribute and stream are defined once, in
``heron.stores.dynamodb.TABLE``; the YAML cannot import it, so these tests hold the copy to it.
"""

from __future__ import annotations

import ast
import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest

from heron.stores.dynamodb import REAPER_FILTER, TABLE
from tests.infra.cfn import ROOT, Resolver, sam_functions  # noqa: E402

FUNCTIONS = {
    "ApiFunction": "heron.functions.api.handler",
    "SweepFunction": "heron.functions.sweep.handler",
    "ResumeFunction": "heron.functions.resume.handler",
    "ReaperFunction": "heron.functions.reaper.handler",
}
#: What deletes items, on the table: the reaper's actions only.
DELETES = {"dynamodb:DeleteItem", "dynamodb:BatchWriteItem"}


def _statements(template: dict[str, Any], role: str) -> list[dict[str, Any]]:
    policies = template["Resources"][role]["Properties"]["Policies"]
    return [statement for policy in policies for statement in policy["PolicyDocument"]["Statement"]]


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# -- the table: what the store defines -------------------------------------------------------------


def test_table_keys_and_attributes_are_the_stores(sam_template: dict[str, Any]) -> None:
    table = sam_template["Resources"]["RunsTable"]["Properties"]
    assert table["KeySchema"] == [
        {"AttributeName": TABLE.partition_key, "KeyType": "HASH"},
        {"AttributeName": TABLE.sort_key, "KeyType": "RANGE"},
    ]
    assert sorted(table["AttributeDefinitions"], key=str) == sorted(
        TABLE.attribute_definitions(), key=str
    )


def test_table_indexes_are_the_stores(sam_template: dict[str, Any]) -> None:
    table = sam_template["Resources"]["RunsTable"]["Properties"]
    assert table["GlobalSecondaryIndexes"] == [index.definition() for index in TABLE.indexes]


def test_table_ttl_stream_billing_and_protection(sam_template: dict[str, Any]) -> None:
    resource = sam_template["Resources"]["RunsTable"]
    table = resource["Properties"]
    assert table["TimeToLiveSpecification"] == {
        "AttributeName": TABLE.ttl_attribute,
        "Enabled": True,
    }
    assert table["StreamSpecification"] == {"StreamViewType": TABLE.stream_view_type}
    assert table["BillingMode"] == "PAY_PER_REQUEST"
    assert table["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert table["SSESpecification"] == {"SSEEnabled": True}
    assert resource["DeletionPolicy"] == resource["UpdateReplacePolicy"] == "Retain"
    assert resource["Condition"] == "UseTable"


def test_the_table_exists_only_without_a_store_url(sam_template: dict[str, Any]) -> None:
    assert Resolver(sam_template).condition("UseTable")
    assert not Resolver(sam_template, StoreUrl="rediss://cache:6379").condition("UseTable")


def test_the_store_url_names_the_table_without_auto_schema(sam_template: dict[str, Any]) -> None:
    env = sam_template["Globals"]["Function"]["Environment"]["Variables"]
    url, table = env["HERON_STORE"]["Fn::If"][1]["Fn::Sub"]
    assert url.startswith("dynamodb://${Table}?region=${AWS::Region}&auto_schema=false")
    assert table["Table"] == {"Ref": "RunsTable"}
    assert Resolver(sam_template)(env["HERON_STORE"]["Fn::If"][1]["Fn::Sub"][1]["Retention"]) == (
        {"Fn::Sub": "&retention_days=${RetentionDays}"}
    )
    assert (
        Resolver(sam_template, RetentionDays="0")(env["HERON_STORE"])["Fn::Sub"][1]["Retention"]
        == ""
    )
    assert Resolver(sam_template, StoreUrl="libsql://db.turso.io")(env["HERON_STORE"]) == (
        "libsql://db.turso.io"
    )


CREDENTIALS = ("TURSO_AUTH_TOKEN", "HERON_REDIS_PASSWORD", "UPSTASH_REDIS_REST_TOKEN")
SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:store-AbCdEf"


@pytest.mark.parametrize(
    ("store_url", "variable"),
    [
        ("libsql://db-org.turso.io", "TURSO_AUTH_TOKEN"),
        ("https://db.example.com", "TURSO_AUTH_TOKEN"),
        ("rediss://cache.example.com:6379", "HERON_REDIS_PASSWORD"),
        ("redis://10.0.0.5:6379/0", "HERON_REDIS_PASSWORD"),
        ("kv+rediss://cache.example.com:6379", "HERON_REDIS_PASSWORD"),
        ("kv+upstash://eu1-x.upstash.io", "UPSTASH_REDIS_REST_TOKEN"),
    ],
)
def test_the_store_secret_goes_where_that_store_reads_its_credential(
    sam_template: dict[str, Any], store_url: str, variable: str
) -> None:
    env = sam_template["Globals"]["Function"]["Environment"]["Variables"]
    resolved = Resolver(sam_template, StoreUrl=store_url, StoreSecretArn=SECRET)(env)
    assert resolved[variable] == {
        "Fn::Sub": "{{resolve:secretsmanager:${StoreSecretArn}:SecretString}}"
    }
    assert [name for name in CREDENTIALS if name in resolved] == [variable]
    without = Resolver(sam_template, StoreUrl=store_url)(env)
    assert not [name for name in CREDENTIALS if name in without]


# -- the queue -------------------------------------------------------------------------------------


def test_visibility_timeout_is_six_times_the_timeout_for_every_allowed_timeout(
    sam_template: dict[str, Any],
) -> None:
    allowed = sam_template["Parameters"]["Timeout"]["AllowedValues"]
    mapping = sam_template["Mappings"]["ResumeTimeouts"]
    assert sorted(int(key) for key in mapping) == sorted(allowed)
    for timeout in allowed:
        assert mapping[str(timeout)]["VisibilityTimeout"] == 6 * timeout
    queue = sam_template["Resources"]["ResumeQueue"]["Properties"]
    assert queue["VisibilityTimeout"] == {
        "Fn::FindInMap": ["ResumeTimeouts", {"Ref": "Timeout"}, "VisibilityTimeout"]
    }


def test_resume_function_uses_the_timeout_the_queue_is_sized_for(
    sam_template: dict[str, Any],
) -> None:
    resume = sam_functions(sam_template)["ResumeFunction"]
    assert resume["Timeout"] == {"Ref": "Timeout"}


def test_queue_redrives_to_the_dead_letter_queue(sam_template: dict[str, Any]) -> None:
    queue = sam_template["Resources"]["ResumeQueue"]["Properties"]
    assert queue["RedrivePolicy"] == {
        "deadLetterTargetArn": {"Fn::GetAtt": ["ResumeDeadLetterQueue", "Arn"]},
        "maxReceiveCount": 5,
    }
    dlq = sam_template["Resources"]["ResumeDeadLetterQueue"]["Properties"]
    assert dlq["MessageRetentionPeriod"] == 14 * 86400
    assert queue["SqsManagedSseEnabled"] and dlq["SqsManagedSseEnabled"]


def test_resume_consumes_the_queue_reporting_partial_failures(
    sam_template: dict[str, Any],
) -> None:
    event = sam_functions(sam_template)["ResumeFunction"]["Events"]["Resume"]
    assert event["Type"] == "SQS"
    assert event["Properties"]["Queue"] == {"Fn::GetAtt": ["ResumeQueue", "Arn"]}
    assert event["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    resolve = Resolver(sam_template, ResumeReservedConcurrency="20")
    assert resolve(event["Properties"]["ScalingConfig"]) == {"MaximumConcurrency": "20"}
    resume = sam_template["Resources"]["ResumeFunction"]["Properties"]
    assert resolve(resume["ReservedConcurrentExecutions"]) == "20"
    assert "ReservedConcurrentExecutions" not in Resolver(sam_template)(resume)


# -- the reaper ------------------------------------------------------------------------------------


def test_reaper_consumes_ttl_removals_from_the_tables_stream(sam_template: dict[str, Any]) -> None:
    event = sam_functions(sam_template)["ReaperFunction"]["Events"]["Expired"]
    assert event["Type"] == "DynamoDB"
    properties = event["Properties"]
    assert properties["Stream"] == {"Fn::GetAtt": ["RunsTable", "StreamArn"]}
    assert properties["StartingPosition"] == "TRIM_HORIZON"
    assert properties["BatchSize"] == 100
    assert properties["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert properties["BisectBatchOnFunctionError"] is True
    assert properties["MaximumRetryAttempts"] > 0
    (pattern,) = [f["Pattern"] for f in properties["FilterCriteria"]["Filters"]]
    assert json.loads(pattern) == REAPER_FILTER


def test_the_reaper_filter_passes_ttl_removals_of_headers_and_reap_requests_only() -> None:
    # TTL also removes the items the store retires (checkpoints, markers, tag items): those
    # must not invoke the reaper, one invocation per item. The filter's key is the table's.
    (sort_key,) = REAPER_FILTER["dynamodb"]["Keys"]
    assert sort_key == TABLE.sort_key
    assert REAPER_FILTER["dynamodb"]["Keys"][sort_key] == {"S": ["R", {"prefix": "X#"}]}
    assert REAPER_FILTER["eventName"] == ["REMOVE"]
    assert REAPER_FILTER["userIdentity"]["principalId"] == ["dynamodb.amazonaws.com"]


@pytest.mark.parametrize(
    "name", ["ReaperFunction", "ReaperRole", "ReaperLogGroup", "ReaperErrorsAlarm"]
)
def test_the_reaper_exists_only_with_the_table(sam_template: dict[str, Any], name: str) -> None:
    assert sam_template["Resources"][name]["Condition"] == "UseTable"


def test_the_reaper_reads_the_stream_and_deletes_runs_only(sam_template: dict[str, Any]) -> None:
    statements = {s["Sid"]: s for s in _statements(sam_template, "ReaperRole")}
    assert set(statements) == {"Logs", "Stream", "Runs"}
    assert statements["Stream"]["Action"] == [
        "dynamodb:DescribeStream",
        "dynamodb:GetRecords",
        "dynamodb:GetShardIterator",
    ]
    assert statements["Stream"]["Resource"] == {"Fn::GetAtt": ["RunsTable", "StreamArn"]}
    assert statements["Runs"]["Action"] == [
        "dynamodb:Query",
        "dynamodb:DeleteItem",
        "dynamodb:BatchWriteItem",
    ]
    assert statements["Runs"]["Resource"] == {"Fn::GetAtt": ["RunsTable", "Arn"]}


# -- the API: throttling and its share of concurrency ----------------------------------------------


def test_the_api_stage_throttles_every_route(sam_template: dict[str, Any]) -> None:
    stage = sam_template["Resources"]["HttpApiStage"]["Properties"]
    assert stage["StageName"] == "$default"
    assert Resolver(sam_template)(stage["DefaultRouteSettings"]) == {
        "ThrottlingRateLimit": "50",
        "ThrottlingBurstLimit": "100",
    }
    custom = Resolver(sam_template, ApiThrottleRateLimit="5", ApiThrottleBurstLimit="10")
    assert custom(stage["DefaultRouteSettings"]) == {
        "ThrottlingRateLimit": "5",
        "ThrottlingBurstLimit": "10",
    }
    parameters = sam_template["Parameters"]
    for name in ("ApiThrottleRateLimit", "ApiThrottleBurstLimit"):
        assert parameters[name]["Type"] == "Number" and parameters[name]["MinValue"] == 1


def test_the_api_has_a_reserved_concurrency_so_resumes_are_never_starved(
    sam_template: dict[str, Any],
) -> None:
    api = sam_template["Resources"]["ApiFunction"]["Properties"]
    # at the defaults: at most 100 API invocations at once, no fewer than the burst the stage
    # lets through (so clients get the stage's 429 before Lambda throttles), and the resume
    # function unreserved (it takes what the account has left)
    defaults = Resolver(sam_template)
    assert defaults(api)["ReservedConcurrentExecutions"] == "100"
    assert int(defaults(api)["ReservedConcurrentExecutions"]) >= int(
        defaults.parameters["ApiThrottleBurstLimit"]
    )
    resume = sam_template["Resources"]["ResumeFunction"]["Properties"]
    assert "ReservedConcurrentExecutions" not in defaults(resume)
    # and 0 means no reservation at all (Lambda's 0 would stop the function)
    assert "ReservedConcurrentExecutions" not in Resolver(sam_template, ApiReservedConcurrency="0")(
        api
    )


# -- the functions ---------------------------------------------------------------------------------


def test_functions_run_python_3_13_on_arm64(resolved: dict[str, Any]) -> None:
    function_globals = resolved["Globals"]["Function"]
    assert function_globals["Runtime"] == "python3.13"
    assert function_globals["Architectures"] == ["arm64"]
    assert function_globals["MemorySize"] == "512"
    assert function_globals["Timeout"] == "60"


@pytest.mark.parametrize(("logical_id", "handler"), sorted(FUNCTIONS.items()))
def test_handlers_name_real_functions(
    sam_template: dict[str, Any], logical_id: str, handler: str
) -> None:
    assert sam_functions(sam_template)[logical_id]["Handler"] == handler
    module, _, name = handler.rpartition(".")
    source = ROOT / "infra" / "lambda" / Path(*module.split(".")).with_suffix(".py")
    tree = ast.parse(source.read_text(encoding="utf-8"))
    defined = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    assert name in defined, f"{source} defines no {name}()"


def test_the_code_folder_links_the_packages_and_lists_their_requirements() -> None:
    code = ROOT / "infra" / "lambda"
    assert (code / "heron").resolve() == ROOT / "src" / "heron"
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    extras = pyproject["project"]["optional-dependencies"]
    declared = {
        re.split(r"[<>=!~ \[]", requirement)[0].lower()
        for extra in ("dynamodb", "api", "redis", "libsql", "upstash")
        for requirement in extras[extra]
    }
    lines = (code / "requirements.txt").read_text(encoding="utf-8").splitlines()
    required = {re.split(r"[<>=!~ \[]", line)[0].lower() for line in lines}
    required.discard("")
    required = {name for name in required if not name.startswith("#")}
    assert required <= declared, f"not in pyproject's extras: {required - declared}"
    assert {"aioboto3", "mangum", "fastapi", "aws-lambda-powertools", "redis", "httpx"} <= required


def test_sweep_runs_on_the_schedule_parameter(resolved: dict[str, Any]) -> None:
    event = resolved["Resources"]["SweepFunction"]["Properties"]["Events"]["Sweep"]
    assert event["Type"] == "Schedule"
    assert event["Properties"]["Schedule"] == "rate(1 minute)"
    assert event["Properties"]["RetryPolicy"]["MaximumRetryAttempts"] == 0


# -- auth ------------------------------------------------------------------------------------------


def test_api_auth_token_by_default_iam_on_request(sam_template: dict[str, Any]) -> None:
    route = sam_template["Resources"]["HttpApiRoute"]["Properties"]
    api = sam_template["Resources"]["ApiFunction"]["Properties"]["Environment"]["Variables"]
    token = Resolver(sam_template)
    assert token(route)["AuthorizationType"] == "NONE"
    assert token(api)["HERON_API_AUTH"] == "token"
    assert token(api)["HERON_API_TOKEN"] == {
        "Fn::Sub": "{{resolve:secretsmanager:${ApiTokenSecret}:SecretString}}"
    }
    assert "Condition" not in sam_template["Resources"]["ApiTokenSecret"]  # in both modes
    iam = Resolver(sam_template, ApiAuth="IAM")
    assert iam(route)["AuthorizationType"] == "AWS_IAM"
    assert iam(api)["HERON_API_AUTH"] == "iam"
    # the dashboard's token: operators sign in with it, browsers cannot sign with SigV4
    assert iam(api)["HERON_API_TOKEN"] == token(api)["HERON_API_TOKEN"]


def test_with_iam_only_the_dashboard_goes_around_the_authorizer(
    sam_template: dict[str, Any],
) -> None:
    resources = sam_template["Resources"]
    dashboard = {
        name: r for name, r in resources.items() if r["Type"] == "AWS::ApiGatewayV2::Route"
    }
    iam, token = Resolver(sam_template, ApiAuth="IAM"), Resolver(sam_template)
    for resolver, expected in (
        (iam, {"$default": "AWS_IAM", "ANY /dashboard": "NONE", "ANY /dashboard/{proxy+}": "NONE"}),
        (token, {"$default": "NONE"}),
    ):
        routes = {
            r["Properties"]["RouteKey"]: resolver(r["Properties"])["AuthorizationType"]
            for r in dashboard.values()
            if "Condition" not in r or resolver.condition(r["Condition"])
        }
        assert routes == expected


def test_a_token_version_pins_the_rotated_secret(sam_template: dict[str, Any]) -> None:
    api = sam_template["Resources"]["ApiFunction"]["Properties"]["Environment"]["Variables"]
    pinned = Resolver(sam_template, ApiTokenVersion="abc-123")(api)["HERON_API_TOKEN"]
    assert pinned == {
        "Fn::Sub": "{{resolve:secretsmanager:${ApiTokenSecret}:SecretString:::${ApiTokenVersion}}}"
    }


# -- least privilege -------------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["ApiRole", "SweepRole", "ResumeRole", "ReaperRole"])
def test_no_wildcard_actions_or_resources(sam_template: dict[str, Any], role: str) -> None:
    for statement in _statements(Resolver(sam_template)(sam_template), role):
        for action in _as_list(statement["Action"]):
            assert "*" not in action, f"{role}: {action}"
        for resource in _as_list(statement["Resource"]):
            assert "*" not in json.dumps(resource), f"{role}: {resource}"


def test_only_the_reaper_may_delete(sam_template: dict[str, Any]) -> None:
    template = Resolver(sam_template)(sam_template)
    for role in ("ApiRole", "ResumeRole", "SweepRole"):
        actions = {a for s in _statements(template, role) for a in _as_list(s["Action"])}
        assert not actions & DELETES, f"{role} may delete: {actions & DELETES}"
        assert not [a for a in actions if a.startswith("dynamodb:Delete")], role
        assert "dynamodb:PartiQLDelete" not in actions
    (runs,) = [s for s in _statements(template, "ReaperRole") if s["Sid"] == "Runs"]
    assert DELETES <= set(runs["Action"])
    for role in ("ApiRole", "ResumeRole"):
        (runs,) = [s for s in _statements(template, role) if s["Sid"] == "Runs"]
        assert runs["Action"] == [
            "dynamodb:GetItem",
            "dynamodb:PutItem",
            "dynamodb:UpdateItem",
            "dynamodb:Query",
            "dynamodb:BatchGetItem",
        ]


def test_table_access_names_the_table_and_its_indexes(sam_template: dict[str, Any]) -> None:
    template = Resolver(sam_template)(sam_template)
    indexes = [{"Fn::Sub": f"${{RunsTable.Arn}}/index/{index.name}"} for index in TABLE.indexes]
    for role in ("ApiRole", "ResumeRole"):
        (runs,) = [s for s in _statements(template, role) if s["Sid"] == "Runs"]
        assert runs["Resource"] == [{"Fn::GetAtt": ["RunsTable", "Arn"]}, *indexes]
        assert all(action.startswith("dynamodb:") for action in runs["Action"])
    (due,) = [s for s in _statements(template, "SweepRole") if s["Sid"] == "Due"]
    assert due == {
        "Sid": "Due",
        "Effect": "Allow",
        "Action": "dynamodb:Query",
        "Resource": {"Fn::Sub": "${RunsTable.Arn}/index/due"},
    }


def test_no_table_access_on_another_store(sam_template: dict[str, Any]) -> None:
    template = Resolver(sam_template, StoreUrl="rediss://cache:6379")(sam_template)
    for role in ("ApiRole", "SweepRole", "ResumeRole"):
        actions = [a for s in _statements(template, role) for a in _as_list(s["Action"])]
        assert not [a for a in actions if a.startswith("dynamodb:")]


# -- alarms and outputs ----------------------------------------------------------------------------


def test_alarms_on_the_dead_letter_queue_and_every_functions_errors(
    sam_template: dict[str, Any],
) -> None:
    alarms = [
        r["Properties"]
        for r in sam_template["Resources"].values()
        if r["Type"] == "AWS::CloudWatch::Alarm"
    ]
    watched = {
        (a["Namespace"], a["MetricName"], json.dumps(a["Dimensions"][0]["Value"])) for a in alarms
    }
    assert watched == {
        (
            "AWS/SQS",
            "ApproximateNumberOfMessagesVisible",
            json.dumps({"Fn::GetAtt": ["ResumeDeadLetterQueue", "QueueName"]}),
        ),
        *(("AWS/Lambda", "Errors", json.dumps({"Ref": name})) for name in FUNCTIONS),
    }
    for alarm in alarms:
        assert (alarm["Threshold"], alarm["ComparisonOperator"], alarm["Period"]) == (
            0,
            "GreaterThanThreshold",
            300,
        )


def test_outputs(sam_template: dict[str, Any]) -> None:
    assert {"ApiUrl", "TableName", "QueueUrl", "DeadLetterQueueUrl"} <= set(sam_template["Outputs"])


# -- samconfig.toml and env.json -------------------------------------------------------------------


def test_samconfig_deploys_repeatably() -> None:
    config = tomllib.loads((ROOT / "samconfig.toml").read_text(encoding="utf-8"))
    deploy = config["default"]["deploy"]["parameters"]
    assert config["default"]["global"]["parameters"]["stack_name"]
    assert deploy["capabilities"] == "CAPABILITY_IAM"
    assert deploy["resolve_s3"] is True


def test_env_json_sets_only_variables_the_functions_have(sam_template: dict[str, Any]) -> None:
    local = json.loads((ROOT / "env.json").read_text(encoding="utf-8"))
    functions = sam_functions(sam_template)
    assert set(local) == set(functions)
    for name, variables in local.items():
        unknown = set(variables) - set(functions[name]["Environment"]["Variables"])
        assert not unknown, f"{name}: env.json sets {unknown}, which the template does not"


def test_sam_local_start_api_finds_the_route(sam_template: dict[str, Any]) -> None:
    # `sam local start-api` reads routes either from SAM's API events or from the CloudFormation
    # API resources, whichever kind it meets first in Resources: the route must come first.
    kinds = [
        resource["Type"]
        for resource in sam_template["Resources"].values()
        if resource["Type"].startswith(("AWS::Serverless::", "AWS::ApiGateway"))
    ]
    assert kinds[0].startswith("AWS::ApiGatewayV2::")
