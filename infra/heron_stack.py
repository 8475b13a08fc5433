"""The Heron stack in CDK: the same resources as ``template.yaml``, built in Python.

``template.yaml`` takes CloudFormation parameters; this stack takes the same settings, under the
same names, as a :class:`Settings` (``cdk synth -c ApiAuth=IAM -c Timeout=120``), and resolves
them when it is synthesized, so the template it writes has plain values where the SAM template
has ``!If`` and ``!FindInMap``. The runs table is built from
:data:`heron.stores.dynamodb.TABLE`, the store's own definition of its keys, indexes, TTL
attribute and stream; ``tests/infra/`` checks that ``template.yaml`` says the same and that both
stacks agree on the queue and the schedule.

The functions' code is ``infra/lambda/`` (a link to the ``heron`` package and the requirements file
``sam build`` uses). Bundling installs the requirements for Python 3.13 on arm64 with this
machine's pip (``--platform``, wheels only), so no Docker is needed; tests skip bundling.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast

import jsii
from aws_cdk import (
    BundlingOptions,
    CfnOutput,
    Duration,
    ILocalBundling,
    RemovalPolicy,
    SecretValue,
    Stack,
    SymlinkFollowMode,
)
from aws_cdk import aws_apigatewayv2 as apigw
from aws_cdk import aws_apigatewayv2_authorizers as apigw_auth
from aws_cdk import aws_apigatewayv2_integrations as apigw_int
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_lambda_event_sources as sources
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from heron.stores.dynamodb import REAPER_FILTER, TABLE, TableSpec

__all__ = [
    "CREDENTIAL_VARIABLES",
    "DLQ_RETENTION",
    "LAMBDA_DIR",
    "MAX_RECEIVE_COUNT",
    "QUEUE_RETENTION",
    "REAPER_ACTIONS",
    "REAPER_BATCH_SIZE",
    "REAPER_RETRY_ATTEMPTS",
    "RUNS_ACTIONS",
    "TIMEOUTS",
    "TTL_REMOVALS",
    "VISIBILITY_FACTOR",
    "HeronStack",
    "Settings",
    "credential_variable",
]

#: This repository's functions' code: the ``heron`` package (linked) and ``requirements.txt``.
LAMBDA_DIR = Path(__file__).resolve().parent / "lambda"

#: The resume queue's visibility timeout is this many times the resume function's timeout
#: (AWS's advice for an SQS event source: room for retries of a batch within one visibility).
VISIBILITY_FACTOR = 6
#: Receives before a resume message goes to the dead-letter queue.
MAX_RECEIVE_COUNT = 5
#: How long the resume queue keeps a message; a lost one is re-sent by the sweep.
QUEUE_RETENTION = Duration.days(4)
#: How long the dead-letter queue keeps one: the most SQS allows.
DLQ_RETENTION = Duration.days(14)
#: API Gateway gives an integration 30 s at most; the API function stops just before.
API_TIMEOUT = 29
#: The functions' timeouts that ``template.yaml`` maps to a visibility timeout.
TIMEOUTS = (15, 30, 60, 120, 300, 600, 900)
ALARM_PERIOD = Duration.minutes(5)
#: Stream records handed to one invocation of the reaper, and its retries of a failing batch.
REAPER_BATCH_SIZE = 100
REAPER_RETRY_ATTEMPTS = 10
#: The stream records the reaper is given: DynamoDB's TTL removing a header or a reap request,
#: nothing else (the store's definition, which ``template.yaml`` copies).
TTL_REMOVALS: dict[str, Any] = REAPER_FILTER
#: What the API and resume functions may do on the table and its indexes: read and write, never
#: delete (``DeleteItem``, and ``BatchWriteItem``, which can delete too, are the reaper's). The
#: store retires items on their paths instead; TTL and the reaper remove them.
RUNS_ACTIONS = (
    "dynamodb:GetItem",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:Query",
    "dynamodb:BatchGetItem",
)
#: The reaper's: a Query of a run's items, batch deletes, conditional deletes.
REAPER_ACTIONS = ("dynamodb:Query", "dynamodb:DeleteItem", "dynamodb:BatchWriteItem")
#: The variable each store reads its credential from, by URL scheme (``StoreSecretArn``'s
#: value goes there); any other scheme is Turso's (``libsql://``, ``https://``).
CREDENTIAL_VARIABLES = {
    "redis": "HERON_REDIS_PASSWORD",
    "rediss": "HERON_REDIS_PASSWORD",
    "kv+redis": "HERON_REDIS_PASSWORD",
    "kv+rediss": "HERON_REDIS_PASSWORD",
    "kv+upstash": "UPSTASH_REDIS_REST_TOKEN",
}


def credential_variable(store_url: str) -> str:
    """The environment variable the store at ``store_url`` reads its credential from."""
    scheme = store_url.split("://", 1)[0]
    return CREDENTIAL_VARIABLES.get(scheme, "TURSO_AUTH_TOKEN")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Settings:
    """The stack's settings: ``template.yaml``'s parameters, same names, same defaults."""

    HeronApp: str = "heron.functions.demo:rt"
    StoreUrl: str = ""
    StoreSecretArn: str = ""
    RetentionDays: int = 30
    ApiAuth: str = "TOKEN"
    ApiTokenVersion: str = ""
    ApiThrottleRateLimit: int = 50
    ApiThrottleBurstLimit: int = 100
    MemorySize: int = 512
    Timeout: int = 60
    ApiReservedConcurrency: int = 100
    ResumeBatchSize: int = 10
    ResumeReservedConcurrency: int = 0
    SweepSchedule: str = "rate(1 minute)"
    LogLevel: str = "INFO"
    LogRetentionDays: int = 30
    AlarmTopicArn: str = ""

    def __post_init__(self) -> None:
        if self.ApiAuth not in ("TOKEN", "IAM"):
            raise ValueError(f"ApiAuth must be TOKEN or IAM, got {self.ApiAuth!r}")
        if self.Timeout not in TIMEOUTS:
            raise ValueError(f"Timeout must be one of {TIMEOUTS}, got {self.Timeout}")
        if self.ResumeReservedConcurrency == 1 or self.ResumeReservedConcurrency < 0:
            raise ValueError("ResumeReservedConcurrency must be 0 (none) or at least 2")
        if self.ApiReservedConcurrency < 0:
            raise ValueError("ApiReservedConcurrency must be 0 (none) or more")
        if self.ApiThrottleRateLimit < 1 or self.ApiThrottleBurstLimit < 1:
            raise ValueError("ApiThrottleRateLimit and ApiThrottleBurstLimit must be at least 1")
        if not 1 <= self.ResumeBatchSize <= 10:
            raise ValueError(f"ResumeBatchSize must be 1..10, got {self.ResumeBatchSize}")
        if self.RetentionDays < 0:
            raise ValueError(f"RetentionDays must be 0 (forever) or more, got {self.RetentionDays}")
        if self.LogLevel not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError(f"LogLevel must be DEBUG, INFO, WARNING or ERROR, got {self.LogLevel}")

    @classmethod
    def from_context(cls, context: Mapping[str, Any]) -> Settings:
        """Settings from CDK context values (strings from ``-c Name=value``, or JSON values)."""
        values: dict[str, Any] = {}
        for field in dataclasses.fields(cls):
            raw = context.get(field.name)
            if raw is None:
                continue
            values[field.name] = int(raw) if field.type == "int" else str(raw)
        return cls(**values)

    @property
    def uses_table(self) -> bool:
        return not self.StoreUrl

    @property
    def visibility_timeout(self) -> int:
        return VISIBILITY_FACTOR * self.Timeout


@jsii.implements(ILocalBundling)
class _PipBundling:
    """Bundles the functions' code without Docker: copy everything in the code folder (links
    followed), then let pip fetch its ``requirements.txt`` as wheels built for the Lambda
    platform (Python 3.13, arm64)."""

    def __init__(self, code_dir: Path) -> None:
        self.code_dir = code_dir

    def try_bundle(self, output_dir: str, options: Any = None) -> bool:
        out = Path(output_dir)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        for entry in self.code_dir.iterdir():
            if entry.is_dir():
                shutil.copytree(entry, out / entry.name, ignore=ignore, dirs_exist_ok=True)
            else:
                shutil.copy2(entry, out / entry.name)
        with tempfile.TemporaryDirectory() as scratch:
            requirements = _wheels_for_folders(self.code_dir / "requirements.txt", Path(scratch))
            self._pip_install(requirements, out)
        return True

    @staticmethod
    def _pip_install(requirements: Path, out: Path) -> None:
        command = [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-compile",
            "--requirement",
            str(requirements),
            "--target",
            str(out),
            "--implementation",
            "cp",
            "--python-version",
            "3.13",
            "--only-binary=:all:",
            "--platform",
            "manylinux2014_aarch64",
            "--platform",
            "manylinux_2_28_aarch64",
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"bundling the Lambda code failed: {' '.join(command)}\n{done.stderr}"
            )


def _wheels_for_folders(requirements: Path, scratch: Path) -> Path:
    """``requirements`` with each ``name @ file:///folder`` line (a local checkout, as
    ``heron init`` writes for a Heron that is not on an index) turned into a wheel built from
    that folder, since the bundling pip takes wheels only (``--only-binary``)."""
    lines = []
    for line in requirements.read_text(encoding="utf-8").splitlines():
        name, at, url = line.partition(" @ ")
        folder = Path(url.strip().removeprefix("file://")) if at else None
        if folder is not None and url.strip().startswith("file://") and folder.is_dir():
            built = scratch / "wheels"
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "wheel",
                    "--no-deps",
                    "-q",
                    "-w",
                    str(built),
                    str(folder),
                ],
                check=True,
                capture_output=True,
            )
            wheel = max(built.glob("*.whl"), key=lambda path: path.stat().st_mtime)
            line = f"{name.strip()} @ {wheel.as_uri()}"
        lines.append(line)
    rewritten = scratch / "requirements.txt"
    rewritten.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return rewritten


def table_props(spec: TableSpec) -> dict[str, Any]:
    """The keys, TTL and stream of a CDK ``Table`` for ``spec``."""
    return {
        "partition_key": _attribute(spec.partition_key, "S"),
        "sort_key": _attribute(spec.sort_key, "S"),
        "time_to_live_attribute": spec.ttl_attribute,
        "stream": dynamodb.StreamViewType[spec.stream_view_type],
    }


def _attribute(name: str, kind: str) -> dynamodb.Attribute:
    types = {"S": dynamodb.AttributeType.STRING, "N": dynamodb.AttributeType.NUMBER}
    return dynamodb.Attribute(name=name, type=types[kind])


class HeronStack(Stack):
    """The table (unless another store is named), the resume queue and its dead-letter queue,
    the functions with a role each (the reaper only with the table), the HTTP API, the sweep
    schedule and the alarms.

    ``code_dir`` is the functions' code: a folder holding the app module (``HeronApp``) and a
    ``requirements.txt`` (Heron itself among them, in a project of your own); by default this
    repository's ``infra/lambda/``, a link to the ``heron`` package and its requirements.
    """

    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        settings: Settings | None = None,
        code_dir: Path = LAMBDA_DIR,
        **kwargs: Any,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.settings = s = settings or Settings()

        # -- the runs table: keys, indexes, TTL and stream from the store's definition ----------
        self.table: dynamodb.Table | None = None
        if s.uses_table:
            table = dynamodb.Table(
                self,
                "RunsTable",
                billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
                point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                    point_in_time_recovery_enabled=True
                ),
                encryption=dynamodb.TableEncryption.AWS_MANAGED,
                removal_policy=RemovalPolicy.RETAIN,
                **table_props(TABLE),
            )
            for index in TABLE.indexes:
                table.add_global_secondary_index(
                    index_name=index.name,
                    partition_key=_attribute(index.partition_key, "S"),
                    sort_key=_attribute(index.sort_key, index.sort_key_type),
                    projection_type=dynamodb.ProjectionType.INCLUDE
                    if index.projected
                    else dynamodb.ProjectionType.KEYS_ONLY,
                    non_key_attributes=list(index.projected) or None,
                )
            _logical_id(table, "RunsTable")
            self.table = table

        # -- the resume queue -------------------------------------------------------------------
        self.dead_letter_queue = sqs.Queue(
            self,
            "ResumeDeadLetterQueue",
            retention_period=DLQ_RETENTION,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.queue = sqs.Queue(
            self,
            "ResumeQueue",
            visibility_timeout=Duration.seconds(s.visibility_timeout),
            retention_period=QUEUE_RETENTION,
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            removal_policy=RemovalPolicy.DESTROY,
            dead_letter_queue=sqs.DeadLetterQueue(
                queue=self.dead_letter_queue, max_receive_count=MAX_RECEIVE_COUNT
            ),
        )
        _logical_id(self.dead_letter_queue, "ResumeDeadLetterQueue")
        _logical_id(self.queue, "ResumeQueue")

        # -- the API token ----------------------------------------------------------------------
        # TOKEN: the bearer token of the whole API. IAM: the token operators sign in to the
        # dashboard with (browsers cannot sign requests with SigV4).
        self.token_secret = secretsmanager.Secret(
            self,
            "ApiTokenSecret",
            description=f"Bearer token for the Heron HTTP API of stack {self.stack_name}",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=48, exclude_punctuation=True
            ),
            removal_policy=RemovalPolicy.DESTROY,
        )
        _logical_id(self.token_secret, "ApiTokenSecret")

        # -- functions --------------------------------------------------------------------------
        code = lambda_.Code.from_asset(
            str(code_dir),
            follow_symlinks=SymlinkFollowMode.ALWAYS,
            exclude=["**/__pycache__", "**/*.pyc"],
            bundling=BundlingOptions(
                image=lambda_.Runtime.PYTHON_3_13.bundling_image,
                # jsii calls back with the options as one positional argument, which the
                # generated Protocol spells as keywords: hence the cast.
                local=cast(ILocalBundling, _PipBundling(code_dir)),
                command=["bash", "-c", "echo 'bundle locally: pip is needed' && exit 1"],
            ),
        )
        environment = self._environment()

        api_env = dict(environment, HERON_API_AUTH=s.ApiAuth.lower())
        # A dynamic reference, resolved by CloudFormation at deploy time (docs/deploy.md).
        token = SecretValue.secrets_manager(
            self.token_secret.secret_arn, version_id=s.ApiTokenVersion or None
        )
        api_env["HERON_API_TOKEN"] = token.unsafe_unwrap()

        self.api_function = self._function(
            "ApiFunction",
            "heron.functions.api.handler",
            "Heron HTTP API (start, signal, cancel, list, inspect; the dashboard)",
            code,
            api_env,
            timeout=API_TIMEOUT,
            reserved=s.ApiReservedConcurrency or None,
        )
        self.sweep_function = self._function(
            "SweepFunction",
            "heron.functions.sweep.handler",
            "Heron sweep (dispatches every run that is due)",
            code,
            environment,
        )
        self.resume_function = self._function(
            "ResumeFunction",
            "heron.functions.resume.handler",
            "Heron resume (runs a workflow until it suspends or finishes)",
            code,
            environment,
            reserved=s.ResumeReservedConcurrency or None,
        )
        self.reaper_function: lambda_.Function | None = None
        if self.table is not None:
            self.reaper_function = self._function(
                "ReaperFunction",
                "heron.functions.reaper.handler",
                "Heron reaper (deletes what TTL leaves of an expired run)",
                code,
                environment,
            )

        # -- least privilege: what each function's store and dispatcher calls need ---------------
        for fn in (self.api_function, self.sweep_function, self.resume_function):
            fn.add_to_role_policy(
                iam.PolicyStatement(actions=["sqs:SendMessage"], resources=[self.queue.queue_arn])
            )
        if self.table is not None:
            indexes = [f"{self.table.table_arn}/index/{index.name}" for index in TABLE.indexes]
            runs = iam.PolicyStatement(
                actions=list(RUNS_ACTIONS), resources=[self.table.table_arn, *indexes]
            )
            self.api_function.add_to_role_policy(runs)
            self.resume_function.add_to_role_policy(runs)
            self.sweep_function.add_to_role_policy(
                iam.PolicyStatement(
                    actions=["dynamodb:Query"], resources=[f"{self.table.table_arn}/index/due"]
                )
            )
            self._reaper(self.table)

        # -- events: the schedule, the queue, the HTTP API --------------------------------------
        self.sweep_rule = events.Rule(
            self,
            "SweepSchedule",
            description="Heron sweep",
            schedule=events.Schedule.expression(s.SweepSchedule),
            targets=[
                targets.LambdaFunction(
                    self.sweep_function, retry_attempts=0, max_event_age=Duration.seconds(60)
                )
            ],
        )
        self.resume_function.add_event_source(
            sources.SqsEventSource(
                self.queue,
                batch_size=s.ResumeBatchSize,
                report_batch_item_failures=True,
                max_concurrency=s.ResumeReservedConcurrency or None,
            )
        )
        self.http_api = apigw.HttpApi(
            self,
            "HttpApi",
            api_name=f"{self.stack_name}-api",
            description="Heron HTTP API",
            default_integration=apigw_int.HttpLambdaIntegration(
                "HttpApiIntegration", self.api_function, timeout=Duration.seconds(API_TIMEOUT)
            ),
            default_authorizer=apigw_auth.HttpIamAuthorizer() if s.ApiAuth == "IAM" else None,
        )
        if s.ApiAuth == "IAM":
            # The dashboard's pages go around the IAM authorizer: the app signs operators in
            # with the token (docs/dashboard.md); these routes reach nothing but /dashboard.
            dashboard = apigw_int.HttpLambdaIntegration(
                "HttpApiDashboardIntegration",
                self.api_function,
                timeout=Duration.seconds(API_TIMEOUT),
            )
            for path in ("/dashboard", "/dashboard/{proxy+}"):
                self.http_api.add_routes(
                    path=path,
                    methods=[apigw.HttpMethod.ANY],
                    integration=dashboard,
                    authorizer=apigw.HttpNoneAuthorizer(),
                )
        # Throttling on every route of the $default stage: API Gateway answers 429 past the
        # rate and the burst, without invoking the function. Set on the stage HttpApi made (an
        # HttpStage of our own would replace it, and a stack update cannot create a second
        # $default stage before it deletes the first).
        assert self.http_api.default_stage is not None
        stage = self.http_api.default_stage.node.default_child
        assert isinstance(stage, apigw.CfnStage)
        stage.default_route_settings = apigw.CfnStage.RouteSettingsProperty(
            throttling_rate_limit=s.ApiThrottleRateLimit,
            throttling_burst_limit=s.ApiThrottleBurstLimit,
        )

        # -- alarms -----------------------------------------------------------------------------
        actions = (
            [
                cloudwatch_actions.SnsAction(
                    sns.Topic.from_topic_arn(self, "AlarmTopic", s.AlarmTopicArn)
                )
            ]
            if s.AlarmTopicArn
            else []
        )
        self.alarms = [
            self._alarm(
                "DeadLetterQueueAlarm",
                self.dead_letter_queue.metric_approximate_number_of_messages_visible(
                    period=ALARM_PERIOD, statistic="Maximum"
                ),
                "Resume messages failed five times and were parked in the dead-letter queue.",
                actions,
            ),
            *(
                self._alarm(
                    f"{name}ErrorsAlarm",
                    fn.metric_errors(period=ALARM_PERIOD, statistic="Sum"),
                    f"The Heron {name.lower()} function failed.",
                    actions,
                )
                for name, fn in (
                    ("Api", self.api_function),
                    ("Sweep", self.sweep_function),
                    ("Resume", self.resume_function),
                    *([("Reaper", self.reaper_function)] if self.reaper_function else []),
                )
            ),
        ]

        # -- outputs ----------------------------------------------------------------------------
        CfnOutput(self, "ApiUrl", value=self.http_api.api_endpoint)
        CfnOutput(self, "ApiTokenSecretArn", value=self.token_secret.secret_arn)
        if self.table is not None:
            CfnOutput(self, "TableName", value=self.table.table_name)
            CfnOutput(
                self,
                "StoreUrl",
                value=f"dynamodb://{self.table.table_name}?region={self.region}&auto_schema=false",
            )
        CfnOutput(self, "QueueUrl", value=self.queue.queue_url)
        CfnOutput(self, "DeadLetterQueueUrl", value=self.dead_letter_queue.queue_url)

    def _reaper(self, table: dynamodb.Table) -> None:
        """The reaper's stream event source (TTL removals of headers and reap requests only)
        and what its deletes need: it is the one function allowed to delete.

        A plain event source mapping: CDK's ``DynamoEventSource`` would grant
        ``dynamodb:ListStreams`` on ``*``, which reading one stream does not need.
        """
        fn, stream = self.reaper_function, table.table_stream_arn
        assert fn is not None and stream is not None
        fn.add_to_role_policy(
            iam.PolicyStatement(
                actions=[
                    "dynamodb:DescribeStream",
                    "dynamodb:GetRecords",
                    "dynamodb:GetShardIterator",
                ],
                resources=[stream],
            )
        )
        fn.add_to_role_policy(
            iam.PolicyStatement(actions=list(REAPER_ACTIONS), resources=[table.table_arn])
        )
        fn.add_event_source_mapping(
            "Expired",
            event_source_arn=stream,
            starting_position=lambda_.StartingPosition.TRIM_HORIZON,
            batch_size=REAPER_BATCH_SIZE,
            retry_attempts=REAPER_RETRY_ATTEMPTS,
            bisect_batch_on_error=True,
            report_batch_item_failures=True,
            filters=[{"pattern": json.dumps(TTL_REMOVALS)}],
        )

    def _environment(self) -> dict[str, str]:
        s = self.settings
        if self.table is not None:
            store = f"dynamodb://{self.table.table_name}?region={self.region}&auto_schema=false"
            if s.RetentionDays:
                store += f"&retention_days={s.RetentionDays}"
        else:
            store = s.StoreUrl
        environment = {
            "HERON_APP": s.HeronApp,
            "HERON_STORE": store,
            "HERON_QUEUE_URL": self.queue.queue_url,
            "POWERTOOLS_SERVICE_NAME": "heron",
            "POWERTOOLS_LOG_LEVEL": s.LogLevel,
            "POWERTOOLS_METRICS_NAMESPACE": "Heron",
        }
        if s.StoreSecretArn:
            environment[credential_variable(s.StoreUrl)] = SecretValue.secrets_manager(
                s.StoreSecretArn
            ).unsafe_unwrap()
        return environment

    def _function(
        self,
        name: str,
        handler: str,
        description: str,
        code: lambda_.Code,
        environment: dict[str, str],
        *,
        timeout: int | None = None,
        reserved: int | None = None,
    ) -> lambda_.Function:
        log_group = logs.LogGroup(self, f"{name.removesuffix('Function')}LogGroup")
        log_group.apply_removal_policy(RemovalPolicy.DESTROY)
        cfn_log_group = log_group.node.default_child
        assert isinstance(cfn_log_group, logs.CfnLogGroup)
        cfn_log_group.retention_in_days = self.settings.LogRetentionDays
        role = iam.Role(
            self,
            f"{name.removesuffix('Function')}Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
        )
        role.add_to_policy(
            iam.PolicyStatement(
                actions=["logs:CreateLogStream", "logs:PutLogEvents"],
                resources=[log_group.log_group_arn],
            )
        )
        fn = lambda_.Function(
            self,
            name,
            description=description,
            runtime=lambda_.Runtime.PYTHON_3_13,
            architecture=lambda_.Architecture.ARM_64,
            handler=handler,
            code=code,
            memory_size=self.settings.MemorySize,
            timeout=Duration.seconds(timeout or self.settings.Timeout),
            environment=environment,
            role=role,
            log_group=log_group,
            reserved_concurrent_executions=reserved,
        )
        _logical_id(fn, name)
        return fn

    def _alarm(
        self,
        name: str,
        metric: cloudwatch.Metric,
        description: str,
        actions: list[cloudwatch_actions.SnsAction],
    ) -> cloudwatch.Alarm:
        alarm = cloudwatch.Alarm(
            self,
            name,
            alarm_description=description,
            metric=metric,
            threshold=0,
            evaluation_periods=1,
            comparison_operator=cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.NOT_BREACHING,
        )
        for action in actions:
            alarm.add_alarm_action(action)
            alarm.add_ok_action(action)
        return alarm


def _logical_id(construct: Construct, logical_id: str) -> None:
    """Give a resource the logical id it has in ``template.yaml``, so the two read alike."""
    child = construct.node.default_child
    assert child is not None
    child.override_logical_id(logical_id)  # type: ignore[attr-defined]
