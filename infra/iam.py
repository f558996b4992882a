"""The stack's IAM and KMS policy documents, and the check `infra.verify` runs on deployed ones; pure.

What an instance may do (review F9): read its own stack's instance parameters and the
BGP password SecureString(s) its role needs (docker hosts the stack's; routers that one
and the on-prem sessions' own, which no docker host may read: review F10), decrypt those through SSM only, fetch the
agent package, and let Session Manager and Run Command reach its SSM Agent. Nothing else:
in particular not `AmazonSSMManagedInstanceCore`, which allows `ssm:GetParameter(s)` on
`Resource: "*"` (every parameter of the account, other stacks' passwords included).
"""

from __future__ import annotations

import fnmatch
import json
from typing import Any, Iterable, Mapping

# Session Manager: the SSM Agent opens its control and data channels and reports itself
# (AWS Systems Manager User Guide, "Step 2: Verify or add instance permissions for Session
# Manager" / "Create a custom IAM role for Session Manager", and the AWS managed policy
# AWSCloud9SSMInstanceProfile, which is exactly these five). These actions take no
# resource ARN (Service Authorization Reference, Amazon Message Gateway Service).
SESSION_ACTIONS = (
    "ssm:UpdateInstanceInformation",
    "ssmmessages:CreateControlChannel",
    "ssmmessages:CreateDataChannel",
    "ssmmessages:OpenControlChannel",
    "ssmmessages:OpenDataChannel",
)
# Run Command delivers commands to the SSM Agent through ec2messages (AWS Systems Manager
# User Guide, "Reference: ec2messages, ssmmessages, and other API operations"): the agent
# restart and upgrade paths in docs/deploy.md use it.
RUN_COMMAND_ACTIONS = (
    "ec2messages:AcknowledgeMessage",
    "ec2messages:DeleteMessage",
    "ec2messages:FailMessage",
    "ec2messages:GetEndpoint",
    "ec2messages:GetMessages",
    "ec2messages:SendReply",
)
READ_ACTIONS = ("ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath")
# The AWS managed policy the review found too broad; verify fails any role that has it.
SSM_CORE = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"


def parameter_arn(region: str, account: str, name: str) -> str:
    return f"arn:aws:ssm:{region}:{account}:parameter{name}"


def via_ssm(region: str) -> dict[str, str]:
    # kms:ViaService: the key is usable only in requests SSM makes on the caller's behalf
    # (AWS KMS Developer Guide, "kms:ViaService"), never by a direct kms:Decrypt.
    return {"kms:ViaService": f"ssm.{region}.amazonaws.com"}


def role_policy(
    *, region: str, account: str, parameter_root: str, secrets: Iterable[str], key_arn: str, object_arn: str
) -> str:
    """One role's inline policy: `secrets` are the SecureString names this role may read."""
    instances = parameter_arn(region, account, f"{parameter_root}/instances")
    secret_arns = [parameter_arn(region, account, s) for s in secrets]
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                # Its own stack's instance parameters (the agent reads its own set by path; the set
                # holds no secret, only placeholders) and the passwords this role needs by name.
                {
                    "Sid": "StackParameters",
                    "Effect": "Allow",
                    "Action": list(READ_ACTIONS),
                    "Resource": [instances, f"{instances}/*"],
                },
                {"Sid": "Passwords", "Effect": "Allow", "Action": "ssm:GetParameter", "Resource": secret_arns},
                # The passwords' customer-managed key, through SSM only. The AWS managed aws/ssm key
                # lets every principal of the account decrypt (AWS Systems Manager User Guide,
                # "Restricting decryption of SecureString parameter values"), hence a key per stack.
                {
                    "Sid": "PasswordKey",
                    "Effect": "Allow",
                    "Action": "kms:Decrypt",
                    "Resource": key_arn,
                    "Condition": {"StringEquals": via_ssm(region)},
                },
                {"Sid": "AgentPackage", "Effect": "Allow", "Action": "s3:GetObject", "Resource": object_arn},
                {"Sid": "SessionManager", "Effect": "Allow", "Action": list(SESSION_ACTIONS), "Resource": "*"},
                {"Sid": "RunCommand", "Effect": "Allow", "Action": list(RUN_COMMAND_ACTIONS), "Resource": "*"},
            ],
        },
        sort_keys=True,
    )


def key_policy(*, region: str, account: str, stack: str, readers: Mapping[str, Iterable[str]]) -> str:
    """The password key's policy. `readers` maps a role ARN to the SecureString ARNs it may decrypt.

    The account statement is AWS's default key policy statement: it makes IAM policies
    effective for the key (without it no administrator could manage or delete the key;
    AWS KMS Developer Guide, "Default key policy"). No other stack's role has an IAM grant
    on this key, and each of this stack's roles may decrypt only through SSM and only for
    its own parameters: SSM passes the parameter's ARN as the encryption context
    PARAMETER_ARN (AWS Systems Manager User Guide, "How Parameter Store uses AWS KMS").
    """
    statements: list[dict[str, Any]] = [
        {
            "Sid": "AccountAdministers",
            "Effect": "Allow",
            "Principal": {"AWS": f"arn:aws:iam::{account}:root"},
            "Action": "kms:*",
            "Resource": "*",
        },
    ]
    for i, (role_arn, arns) in enumerate(sorted(readers.items())):
        statements.append(
            {
                "Sid": f"InstancesDecryptViaSsm{i}",
                "Effect": "Allow",
                "Principal": {"AWS": role_arn},
                "Action": "kms:Decrypt",
                "Resource": "*",
                "Condition": {
                    "StringEquals": via_ssm(region),
                    "ForAnyValue:StringEquals": {"kms:EncryptionContext:PARAMETER_ARN": sorted(arns)},
                },
            }
        )
    return json.dumps(
        {"Version": "2012-10-17", "Id": f"overlay-{stack}-bgp-passwords", "Statement": statements}, sort_keys=True
    )


def reads_parameter(document: Mapping[str, Any] | str, name: str) -> list[str]:
    """The Sids of the Allow statements that let a role read parameter `name` (a path), in
    any region or account: `*`, a wildcard over it, or its ARN."""
    doc = json.loads(document) if isinstance(document, str) else document
    out = []
    for stmt in _as_list(doc.get("Statement", [])):
        if stmt.get("Effect") != "Allow":
            continue
        actions = _as_list(stmt.get("Action", [])) if "NotAction" not in stmt else ["*"]
        if not any(_matches(a, x) for a in actions for x in READ_ACTIONS):
            continue
        for r in _as_list(stmt.get("Resource", [])) if "NotResource" not in stmt else ["*"]:
            path = r.split(":parameter", 1)[1] if ":parameter" in r else None
            if (path is not None and fnmatch.fnmatchcase(name, path)) or (
                path is None and fnmatch.fnmatchcase(f"arn:aws:ssm:us-east-1:000000000000:parameter{name}", r)
            ):
                out.append(stmt.get("Sid") or "(no Sid)")
                break
    return out


# A parameter no stack's role should reach: a resource pattern matching it is account-wide.
OTHER_STACKS_PARAMETER = "arn:aws:ssm:us-east-1:000000000000:parameter/some-other-project/stack/bgp-password"


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _matches(pattern: str, action: str) -> bool:
    return fnmatch.fnmatchcase(action.lower(), pattern.lower())


def policy_problems(document: Mapping[str, Any] | str, parameter_root: str | None = None) -> list[str]:
    """What lets a role read more than its own stack's parameters: one line each.

    - an Allow of ssm:GetParameter* (by name or wildcard) on a resource that is `*` or a
      wildcard over every parameter of the account (`...:parameter/*`), or, given the
      stack's `parameter_root` (/<project>/<stack>), over another stack's;
    - an Allow of kms:Decrypt on `*` without a kms:ViaService condition;
    - any NotAction/NotResource Allow (it grants everything but a list).
    """
    doc = json.loads(document) if isinstance(document, str) else document
    others = [OTHER_STACKS_PARAMETER.split(":parameter", 1)[1]]
    if parameter_root:
        project = parameter_root.strip("/").split("/")[0]
        others.append(f"/{project}/zz-another-stack/bgp-password")

    def too_broad(resource: str) -> bool:
        # A parameter ARN's path decides (any region or account of it is another stack's
        # too); anything else must not match a parameter ARN at all.
        if ":parameter" in resource:
            return any(fnmatch.fnmatchcase(o, resource.split(":parameter", 1)[1]) for o in others)
        return fnmatch.fnmatchcase(OTHER_STACKS_PARAMETER, resource)

    out = []
    for stmt in _as_list(doc.get("Statement", [])):
        if stmt.get("Effect") != "Allow":
            continue
        sid = stmt.get("Sid") or "(no Sid)"
        if "NotAction" in stmt or "NotResource" in stmt:
            out.append(f"{sid}: Allow with NotAction/NotResource")
            continue
        actions = _as_list(stmt.get("Action", []))
        resources = _as_list(stmt.get("Resource", []))
        broad = [r for r in resources if too_broad(r)]
        reads = [a for a in actions if any(_matches(a, x) for x in READ_ACTIONS)]
        if reads and broad:
            out.append(f"{sid}: {', '.join(reads)} on {', '.join(broad)}")
        decrypt = [a for a in actions if _matches(a, "kms:Decrypt")]
        if reads and broad and decrypt == reads:
            continue  # "*" on "*": named once, above
        conditions = json.dumps(stmt.get("Condition", {}))
        if decrypt and "*" in resources and "kms:ViaService" not in conditions:
            out.append(f"{sid}: {', '.join(decrypt)} on * without kms:ViaService")
    return out


# What an EC2 Image Builder build instance does (infra/components/image.py): Image Builder runs
# the component through Run Command (the SSM Agent's channels above), AWSTOE fetches itself from
# Image Builder's `ec2imagebuilder*` buckets and the component document by GetComponent, and logs
# go to /aws/imagebuilder/ (the statements of AWS's EC2InstanceProfileForImageBuilder that apply:
# no container images, no customer-managed component key). Inline, like the instance roles', so
# `infra.verify` checks it the same way; it reads no parameter and decrypts nothing.
def build_role_policy(*, region: str, account: str, component_arn: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Sid": "SessionManager", "Effect": "Allow", "Action": list(SESSION_ACTIONS), "Resource": "*"},
                {"Sid": "RunCommand", "Effect": "Allow", "Action": list(RUN_COMMAND_ACTIONS), "Resource": "*"},
                {
                    "Sid": "Component",
                    "Effect": "Allow",
                    "Action": "imagebuilder:GetComponent",
                    "Resource": component_arn,
                },
                {
                    "Sid": "Toe",
                    "Effect": "Allow",
                    "Action": "s3:GetObject",
                    "Resource": "arn:aws:s3:::ec2imagebuilder*",
                },
                {
                    "Sid": "Logs",
                    "Effect": "Allow",
                    "Action": ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"],
                    "Resource": f"arn:aws:logs:{region}:{account}:log-group:/aws/imagebuilder/*",
                },
            ],
        },
        sort_keys=True,
    )
