"""The CDK stack (``infra/``): what it declares, and that it declares what ``template.yaml`` does.

The parity tests compare the stack synthesized with its default settings to ``template.yaml``
with every parameter at its default: table keys and indexes, queue settings, schedule,
functions, the actions each role is allowed, alarms and outputs.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from aws_cdk.assertions import Match, Template

from heron.stores.dynamodb import REAPER_FILTER, TABLE
from infra.heron_stack import (  # noqa: E402
    REAPER_ACTIONS,
    RUNS_ACTIONS,
    TIMEOUTS,
    TTL_REMOVALS,
    Settings,
)
from tests.infra.cfn import Resolver, sam_functions  # noqa: E402

Synth = Callable[..., dict[str, Any]]
FUNCTIONS = ("ApiFunction", "SweepFunction", "ResumeFunction", "ReaperFunction")


def _of_type(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {
        name: resource
        for name, resource in template["Resources"].items()
        if resource["Type"] == kind
    }


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _mapping_of(template: dict[str, Any], function: str) -> dict[str, Any]:
    (mapping,) = [
        m["Properties"]
        for m in _of_type(template, "AWS::Lambda::EventSourceMapping").values()
        if m["Properties"]["FunctionName"] == {"Ref": function}
    ]
    return mapping


def _role_of(template: dict[str, Any], function: str) -> str:
    role = template["Resources"][function]["Properties"]["Role"]
    return str(role["Fn::GetAtt"][0])


def _cdk_actions(template: dict[str, Any], function: str) -> set[str]:
    role = _role_of(template, function)
    actions: set[str] = set()
    for policy in _of_type(template, "AWS::IAM::Policy").values():
        if {"Ref": role} in policy["Properties"]["Roles"]:
            for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
                actions.update(_as_list(statement["Action"]))
    return actions


def _sam_actions(template: dict[str, Any], function: str) -> set[str]:
    role = _role_of(template, function)
    actions: set[str] = set()
    for policy in template["Resources"][role]["Properties"]["Policies"]:
        for statement in policy["PolicyDocument"]["Statement"]:
            actions.update(_as_list(statement["Action"]))
    return actions


@pytest.fixture(scope="module")
def default(synth: Synth) -> dict[str, Any]:
    return synth()


# -- what the stack declares -----------------------------------------------------------------------


def test_table_is_built_from_the_stores_definition(default: dict[str, Any]) -> None:
    Template.from_json(default).has_resource(
        "AWS::DynamoDB::Table",
        {
            "DeletionPolicy": "Retain",
            "UpdateReplacePolicy": "Retain",
            "Properties": {
                "BillingMode": "PAY_PER_REQUEST",
                "KeySchema": [
                    {"AttributeName": TABLE.partition_key, "KeyType": "HASH"},
                    {"AttributeName": TABLE.sort_key, "KeyType": "RANGE"},
                ],
                "AttributeDefinitions": Match.array_with(TABLE.attribute_definitions()),
                "GlobalSecondaryIndexes": [index.definition() for index in TABLE.indexes],
                "TimeToLiveSpecification": {"AttributeName": TABLE.ttl_attribute, "Enabled": True},
                "StreamSpecification": {"StreamViewType": TABLE.stream_view_type},
                "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
                "SSESpecification": {"SSEEnabled": True},
            },
        },
    )


@pytest.mark.parametrize("timeout", [15, 60, 900])
def test_visibility_timeout_is_six_times_the_resume_timeout(synth: Synth, timeout: int) -> None:
    template = Template.from_json(synth(Timeout=timeout))
    template.has_resource_properties(
        "AWS::SQS::Queue",
        {
            "VisibilityTimeout": 6 * timeout,
            "RedrivePolicy": {"deadLetterTargetArn": Match.any_value(), "maxReceiveCount": 5},
        },
    )
    template.has_resource_properties(
        "AWS::Lambda::Function", {"Handler": "heron.functions.resume.handler", "Timeout": timeout}
    )


def test_resume_consumes_the_queue_reporting_partial_failures(default: dict[str, Any]) -> None:
    Template.from_json(default).has_resource_properties(
        "AWS::Lambda::EventSourceMapping",
        {
            "EventSourceArn": {"Fn::GetAtt": ["ResumeQueue", "Arn"]},
            "FunctionName": {"Ref": "ResumeFunction"},
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
            "ScalingConfig": Match.absent(),
        },
    )


def test_reserved_concurrency_caps_the_event_source_too(synth: Synth) -> None:
    template = Template.from_json(synth(ResumeReservedConcurrency=20))
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {"Handler": "heron.functions.resume.handler", "ReservedConcurrentExecutions": 20},
    )
    template.has_resource_properties(
        "AWS::Lambda::EventSourceMapping", {"ScalingConfig": {"MaximumConcurrency": 20}}
    )


@pytest.mark.parametrize("name", FUNCTIONS)
def test_functions_run_python_3_13_on_arm64(default: dict[str, Any], name: str) -> None:
    function = default["Resources"][name]["Properties"]
    assert function["Runtime"] == "python3.13"
    assert function["Architectures"] == ["arm64"]


def test_sweep_schedule_is_a_setting(synth: Synth) -> None:
    Template.from_json(synth(SweepSchedule="rate(5 minutes)")).has_resource_properties(
        "AWS::Events::Rule",
        {
            "ScheduleExpression": "rate(5 minutes)",
            "Targets": [Match.object_like({"Arn": {"Fn::GetAtt": ["SweepFunction", "Arn"]}})],
        },
    )


def test_token_auth_by_default(default: dict[str, Any]) -> None:
    template = Template.from_json(default)
    template.has_resource_properties("AWS::ApiGatewayV2::Route", {"AuthorizationType": "NONE"})
    template.resource_count_is("AWS::SecretsManager::Secret", 1)
    variables = default["Resources"]["ApiFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["HERON_API_AUTH"] == "token"
    assert "{{resolve:secretsmanager:" in json.dumps(variables["HERON_API_TOKEN"])


def test_iam_auth_with_the_dashboard_behind_token_sign_in(
    synth: Synth, sam_template: dict[str, Any]
) -> None:
    iam = synth(ApiAuth="IAM")
    template = Template.from_json(iam)
    routes = {
        r["Properties"]["RouteKey"]: r["Properties"]["AuthorizationType"]
        for r in _of_type(iam, "AWS::ApiGatewayV2::Route").values()
    }
    assert routes == {
        "$default": "AWS_IAM",
        "ANY /dashboard": "NONE",
        "ANY /dashboard/{proxy+}": "NONE",
    }
    template.resource_count_is("AWS::SecretsManager::Secret", 1)
    variables = iam["Resources"]["ApiFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["HERON_API_AUTH"] == "iam"
    assert "{{resolve:secretsmanager:" in json.dumps(variables["HERON_API_TOKEN"])
    # the same routes as the template's with ApiAuth=IAM
    resolved = Resolver(sam_template, ApiAuth="IAM")
    sam_routes = {
        r["Properties"]["RouteKey"]: resolved(r["Properties"])["AuthorizationType"]
        for r in sam_template["Resources"].values()
        if r["Type"] == "AWS::ApiGatewayV2::Route"
        and ("Condition" not in r or resolved.condition(r["Condition"]))
    }
    assert sam_routes == routes


def test_another_store_means_no_table_and_no_table_access(synth: Synth) -> None:
    secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:turso-AbCdEf"
    other = synth(StoreUrl="libsql://db-org.turso.io", StoreSecretArn=secret)
    Template.from_json(other).resource_count_is("AWS::DynamoDB::Table", 0)
    assert "ReaperFunction" not in other["Resources"]  # no table, no stream, no TTL to follow
    for name in FUNCTIONS[:-1]:
        variables = other["Resources"][name]["Properties"]["Environment"]["Variables"]
        assert variables["HERON_STORE"] == "libsql://db-org.turso.io"
        assert (
            variables["TURSO_AUTH_TOKEN"]
            == f"{{{{resolve:secretsmanager:{secret}:SecretString:::}}}}"
        )
        assert not [a for a in _cdk_actions(other, name) if a.startswith("dynamodb:")]


@pytest.mark.parametrize(
    ("store_url", "variable"),
    [
        ("libsql://db-org.turso.io", "TURSO_AUTH_TOKEN"),
        ("rediss://cache.example.com:6379", "HERON_REDIS_PASSWORD"),
        ("kv+upstash://eu1-x.upstash.io", "UPSTASH_REDIS_REST_TOKEN"),
    ],
)
def test_the_store_secret_goes_where_that_store_reads_its_credential(
    synth: Synth, sam_template: dict[str, Any], store_url: str, variable: str
) -> None:
    secret = "arn:aws:secretsmanager:us-east-1:123456789012:secret:store-AbCdEf"
    stack = synth(StoreUrl=store_url, StoreSecretArn=secret)
    resolved = Resolver(sam_template, StoreUrl=store_url, StoreSecretArn=secret)(sam_template)
    sam_variables = sam_functions(resolved)["ApiFunction"]["Environment"]["Variables"]
    credentials = {"TURSO_AUTH_TOKEN", "HERON_REDIS_PASSWORD", "UPSTASH_REDIS_REST_TOKEN"}
    for name in FUNCTIONS[:-1]:
        variables = stack["Resources"][name]["Properties"]["Environment"]["Variables"]
        assert credentials & set(variables) == {variable} == credentials & set(sam_variables)
        assert variables[variable] == f"{{{{resolve:secretsmanager:{secret}:SecretString:::}}}}"


def test_no_wildcard_actions_or_resources(default: dict[str, Any]) -> None:
    statements = [
        statement
        for policy in _of_type(default, "AWS::IAM::Policy").values()
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]
    ]
    assert statements
    for statement in statements:
        for action in _as_list(statement["Action"]):
            assert "*" not in action, statement
        for resource in _as_list(statement["Resource"]):
            assert "*" not in json.dumps(resource), statement
    for role in _of_type(default, "AWS::IAM::Role").values():
        assert "ManagedPolicyArns" not in role["Properties"]


def test_only_the_reaper_may_delete(default: dict[str, Any]) -> None:
    deletes = {"dynamodb:DeleteItem", "dynamodb:BatchWriteItem"}
    for name in ("ApiFunction", "ResumeFunction", "SweepFunction"):
        actions = _cdk_actions(default, name)
        assert not actions & deletes, f"{name} may delete: {actions & deletes}"
        assert not [a for a in actions if "Delete" in a and a.startswith("dynamodb:")], name
    for name in ("ApiFunction", "ResumeFunction"):
        assert {a for a in _cdk_actions(default, name) if a.startswith("dynamodb:")} == set(
            RUNS_ACTIONS
        )
    assert deletes <= _cdk_actions(default, "ReaperFunction")
    assert {a for a in _cdk_actions(default, "ReaperFunction") if a.startswith("dynamodb:")} == {
        *REAPER_ACTIONS,
        "dynamodb:DescribeStream",
        "dynamodb:GetRecords",
        "dynamodb:GetShardIterator",
    }


def test_the_reaper_hears_only_of_headers_and_reap_requests(default: dict[str, Any]) -> None:
    assert TTL_REMOVALS == REAPER_FILTER
    (pattern,) = _mapping_of(default, "ReaperFunction")["FilterCriteria"]["Filters"]
    assert json.loads(pattern["Pattern"])["dynamodb"] == {
        "Keys": {"sk": {"S": ["R", {"prefix": "X#"}]}}
    }


def test_api_throttling_and_reserved_concurrency_are_settings(synth: Synth) -> None:
    template = Template.from_json(
        synth(ApiThrottleRateLimit=5, ApiThrottleBurstLimit=10, ApiReservedConcurrency=30)
    )
    template.has_resource_properties(
        "AWS::ApiGatewayV2::Stage",
        {
            "StageName": "$default",
            "DefaultRouteSettings": {"ThrottlingRateLimit": 5, "ThrottlingBurstLimit": 10},
        },
    )
    template.has_resource_properties(
        "AWS::Lambda::Function",
        {"Handler": "heron.functions.api.handler", "ReservedConcurrentExecutions": 30},
    )
    none = synth(ApiReservedConcurrency=0)
    assert "ReservedConcurrentExecutions" not in none["Resources"]["ApiFunction"]["Properties"]


def test_sweep_may_only_query_the_due_index(default: dict[str, Any]) -> None:
    assert _cdk_actions(default, "SweepFunction") == {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
        "sqs:SendMessage",
        "dynamodb:Query",
    }
    Template.from_json(default).has_resource_properties(
        "AWS::IAM::Policy",
        {
            "PolicyDocument": {
                "Statement": Match.array_with(
                    [
                        {
                            "Action": "dynamodb:Query",
                            "Effect": "Allow",
                            "Resource": {
                                "Fn::Join": [
                                    "",
                                    [{"Fn::GetAtt": ["RunsTable", "Arn"]}, "/index/due"],
                                ]
                            },
                        }
                    ]
                )
            }
        },
    )


def test_alarms_on_the_dead_letter_queue_and_function_errors(default: dict[str, Any]) -> None:
    template = Template.from_json(default)
    template.resource_count_is("AWS::CloudWatch::Alarm", 5)
    template.has_resource_properties(
        "AWS::CloudWatch::Alarm",
        {
            "Namespace": "AWS/SQS",
            "MetricName": "ApproximateNumberOfMessagesVisible",
            "Dimensions": [
                {
                    "Name": "QueueName",
                    "Value": {"Fn::GetAtt": ["ResumeDeadLetterQueue", "QueueName"]},
                }
            ],
            "Threshold": 0,
            "ComparisonOperator": "GreaterThanThreshold",
        },
    )
    for name in FUNCTIONS:
        template.has_resource_properties(
            "AWS::CloudWatch::Alarm",
            {
                "Namespace": "AWS/Lambda",
                "MetricName": "Errors",
                "Dimensions": [{"Name": "FunctionName", "Value": {"Ref": name}}],
                "Period": 300,
            },
        )


def test_settings_come_from_context_and_are_checked() -> None:
    settings = Settings.from_context({"Timeout": "300", "ApiAuth": "IAM", "Other": "x"})
    assert (settings.Timeout, settings.ApiAuth, settings.visibility_timeout) == (300, "IAM", 1800)
    with pytest.raises(ValueError, match="Timeout"):
        Settings(Timeout=45)
    with pytest.raises(ValueError, match="ApiAuth"):
        Settings(ApiAuth="NONE")
    with pytest.raises(ValueError, match="ResumeReservedConcurrency"):
        Settings(ResumeReservedConcurrency=1)
    with pytest.raises(ValueError, match="ApiReservedConcurrency"):
        Settings(ApiReservedConcurrency=-1)
    with pytest.raises(ValueError, match="ApiThrottle"):
        Settings(ApiThrottleBurstLimit=0)


def test_settings_are_the_templates_parameters(sam_template: dict[str, Any]) -> None:
    defaults = {name: str(spec.get("Default")) for name, spec in sam_template["Parameters"].items()}
    assert {name: str(value) for name, value in vars(Settings()).items()} == defaults
    assert tuple(sam_template["Parameters"]["Timeout"]["AllowedValues"]) == TIMEOUTS
    for timeout, visibility in sam_template["Mappings"]["ResumeTimeouts"].items():
        assert Settings(Timeout=int(timeout)).visibility_timeout == visibility["VisibilityTimeout"]


# -- the same stack as template.yaml ---------------------------------------------------------------


def test_same_table(default: dict[str, Any], resolved: dict[str, Any]) -> None:
    ours = default["Resources"]["RunsTable"]
    theirs = resolved["Resources"]["RunsTable"]
    for key in ("DeletionPolicy", "UpdateReplacePolicy"):
        assert ours[key] == theirs[key]
    ours, theirs = ours["Properties"], theirs["Properties"]
    assert set(ours) == set(theirs)
    for key in ours:
        if key == "AttributeDefinitions":
            assert sorted(ours[key], key=str) == sorted(theirs[key], key=str)
        else:
            assert ours[key] == theirs[key], key


def test_same_queues(default: dict[str, Any], resolved: dict[str, Any]) -> None:
    for name in ("ResumeQueue", "ResumeDeadLetterQueue"):
        ours = default["Resources"][name]
        theirs = resolved["Resources"][name]
        assert ours["Properties"] == theirs["Properties"], name
        assert ours["DeletionPolicy"] == theirs["DeletionPolicy"]


def test_same_schedule(default: dict[str, Any], resolved: dict[str, Any]) -> None:
    (rule,) = _of_type(default, "AWS::Events::Rule").values()
    event = resolved["Resources"]["SweepFunction"]["Properties"]["Events"]["Sweep"]["Properties"]
    assert rule["Properties"]["ScheduleExpression"] == event["Schedule"]
    assert rule["Properties"]["Targets"][0]["RetryPolicy"] == event["RetryPolicy"]


def test_same_event_source(default: dict[str, Any], resolved: dict[str, Any]) -> None:
    mapping = _mapping_of(default, "ResumeFunction")
    event = resolved["Resources"]["ResumeFunction"]["Properties"]["Events"]["Resume"]["Properties"]
    assert mapping["BatchSize"] == int(event["BatchSize"])
    assert mapping["FunctionResponseTypes"] == event["FunctionResponseTypes"]


def test_same_stream_event_source(default: dict[str, Any], resolved: dict[str, Any]) -> None:
    mapping = _mapping_of(default, "ReaperFunction")
    event = resolved["Resources"]["ReaperFunction"]["Properties"]["Events"]["Expired"]["Properties"]
    assert (
        mapping["EventSourceArn"] == event["Stream"] == {"Fn::GetAtt": ["RunsTable", "StreamArn"]}
    )
    for key in (
        "StartingPosition",
        "BatchSize",
        "MaximumRetryAttempts",
        "BisectBatchOnFunctionError",
        "FunctionResponseTypes",
    ):
        assert mapping[key] == event[key], key
    patterns = [
        [json.loads(f["Pattern"]) for f in source["FilterCriteria"]["Filters"]]
        for source in (mapping, event)
    ]
    assert patterns[0] == patterns[1] == [TTL_REMOVALS]


@pytest.mark.parametrize("name", FUNCTIONS)
def test_same_functions(default: dict[str, Any], resolved: dict[str, Any], name: str) -> None:
    ours = default["Resources"][name]["Properties"]
    theirs = sam_functions(resolved)[name]
    for key in ("Handler", "Runtime", "Architectures", "Description"):
        assert ours[key] == theirs[key], key
    for key in ("MemorySize", "Timeout"):
        assert str(ours[key]) == str(theirs[key]), key
    assert set(ours["Environment"]["Variables"]) == set(theirs["Environment"]["Variables"])
    for variable, value in theirs["Environment"]["Variables"].items():
        if isinstance(value, str):
            assert ours["Environment"]["Variables"][variable] == value, variable


@pytest.mark.parametrize("name", FUNCTIONS)
def test_same_permissions(default: dict[str, Any], resolved: dict[str, Any], name: str) -> None:
    # CDK's grant for an SQS event source adds sqs:GetQueueUrl, which the poller does not need.
    assert _cdk_actions(default, name) - {"sqs:GetQueueUrl"} == _sam_actions(resolved, name)


def test_same_throttling(default: dict[str, Any], resolved: dict[str, Any]) -> None:
    (stage,) = _of_type(default, "AWS::ApiGatewayV2::Stage").values()
    theirs = resolved["Resources"]["HttpApiStage"]["Properties"]
    assert stage["Properties"]["StageName"] == theirs["StageName"] == "$default"
    assert stage["Properties"]["AutoDeploy"] is theirs["AutoDeploy"] is True
    ours = stage["Properties"]["DefaultRouteSettings"]
    assert {key: str(value) for key, value in ours.items()} == theirs["DefaultRouteSettings"]


@pytest.mark.parametrize("name", ["ApiFunction", "ResumeFunction"])
@pytest.mark.parametrize("overrides", [{}, {"ApiReservedConcurrency": 0}])
def test_same_reserved_concurrency(
    synth: Synth, sam_template: dict[str, Any], name: str, overrides: dict[str, int]
) -> None:
    from tests.infra.cfn import Resolver

    ours = synth(**overrides)["Resources"][name]["Properties"]
    resolve = Resolver(sam_template, **{key: str(value) for key, value in overrides.items()})
    theirs = resolve(sam_template["Resources"][name]["Properties"])
    assert str(ours.get("ReservedConcurrentExecutions")) == str(
        theirs.get("ReservedConcurrentExecutions")
    )


def test_same_route_and_outputs(default: dict[str, Any], resolved: dict[str, Any]) -> None:
    (route,) = _of_type(default, "AWS::ApiGatewayV2::Route").values()
    theirs = resolved["Resources"]["HttpApiRoute"]["Properties"]
    for key in ("RouteKey", "AuthorizationType"):
        assert route["Properties"][key] == theirs[key]
    outputs = {name for name, output in resolved["Outputs"].items() if "Condition" not in output}
    conditional = {"TableName", "StoreUrl"}  # true at the defaults
    assert set(default["Outputs"]) == outputs | conditional
