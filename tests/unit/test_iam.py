"""infra.iam: the stack's policies read nothing beyond the stack; the check verify runs catches what would."""

from __future__ import annotations

import json

import pytest

from infra.iam import SESSION_ACTIONS, key_policy, policy_problems, role_policy

# The parameter-reading statement of AmazonSSMManagedInstanceCore (AWS managed policy
# reference), which is what review F9 found attached.
SSM_CORE_STATEMENT = {
    "Effect": "Allow",
    "Action": [
        "ssm:DescribeAssociation",
        "ssm:GetDeployablePatchSnapshotForInstance",
        "ssm:GetDocument",
        "ssm:DescribeDocument",
        "ssm:GetManifest",
        "ssm:GetParameter",
        "ssm:GetParameters",
        "ssm:ListAssociations",
        "ssm:ListInstanceAssociations",
        "ssm:PutInventory",
        "ssm:PutComplianceItems",
        "ssm:PutConfigurePackageResult",
        "ssm:UpdateAssociationStatus",
        "ssm:UpdateInstanceAssociationStatus",
        "ssm:UpdateInstanceInformation",
    ],
    "Resource": "*",
}


def _doc(*statements):
    return {"Version": "2012-10-17", "Statement": list(statements)}


def test_the_programs_role_policy_passes():
    doc = role_policy(
        region="eu-west-1",
        account="123456789012",
        parameter_root="/overlay/prod-euw1",
        secrets=["/overlay/prod-euw1/bgp-password"],
        key_arn="arn:aws:kms:eu-west-1:1:key/k",
        object_arn="arn:aws:s3:::b/agent/x",
    )
    assert policy_problems(doc) == []
    stmts = {s["Sid"]: s for s in json.loads(doc)["Statement"]}
    assert tuple(stmts["SessionManager"]["Action"]) == SESSION_ACTIONS


@pytest.mark.parametrize(
    "statement,problem",
    [
        (SSM_CORE_STATEMENT, "ssm:GetParameter, ssm:GetParameters on *"),
        ({"Effect": "Allow", "Action": "ssm:*", "Resource": "*"}, "ssm:* on *"),
        ({"Effect": "Allow", "Action": "*", "Resource": "*"}, "* on *"),
        (
            {"Effect": "Allow", "Action": "ssm:GetParametersByPath", "Resource": "arn:aws:ssm:*:*:parameter/*"},
            "ssm:GetParametersByPath on arn:aws:ssm:*:*:parameter/*",
        ),
        (
            {"Effect": "Allow", "Action": "ssm:Get*", "Resource": "arn:aws:ssm:eu-west-1:1:parameter/overlay/*"},
            "ssm:Get* on arn:aws:ssm:eu-west-1:1:parameter/overlay/*",
        ),  # every stack's: too broad too
        ({"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"}, "kms:Decrypt on * without kms:ViaService"),
        ({"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}, "Allow with NotAction/NotResource"),
    ],
)
def test_too_broad_statements_are_named(statement, problem):
    problems = policy_problems(_doc({"Sid": "S", **statement}), "/overlay/prod-euw1")
    if problem is None:
        assert problems, statement
    else:
        assert problems == [f"S: {problem}"]


def test_denies_and_scoped_reads_are_fine():
    assert (
        policy_problems(
            _doc(
                {"Effect": "Deny", "Action": "ssm:*", "Resource": "*"},
                {
                    "Effect": "Allow",
                    "Action": "ssm:GetParameter",
                    "Resource": "arn:aws:ssm:eu-west-1:1:parameter/overlay/prod-euw1/instances/*",
                },
                {
                    "Effect": "Allow",
                    "Action": "kms:Decrypt",
                    "Resource": "*",
                    "Condition": {"StringEquals": {"kms:ViaService": "ssm.eu-west-1.amazonaws.com"}},
                },
            )
        )
        == []
    )


def test_key_policy_lets_each_role_decrypt_only_its_parameters_through_ssm():
    doc = json.loads(
        key_policy(
            region="eu-west-1",
            account="1",
            stack="prod-euw1",
            readers={
                "arn:aws:iam::1:role/routers": ["arn:p/bgp", "arn:p/onprem"],
                "arn:aws:iam::1:role/hosts": ["arn:p/bgp"],
            },
        )
    )
    admin, hosts, routers = doc["Statement"]
    assert admin["Principal"] == {"AWS": "arn:aws:iam::1:root"}
    assert hosts["Principal"] == {"AWS": "arn:aws:iam::1:role/hosts"} and hosts["Action"] == "kms:Decrypt"
    assert hosts["Condition"] == {
        "StringEquals": {"kms:ViaService": "ssm.eu-west-1.amazonaws.com"},
        "ForAnyValue:StringEquals": {"kms:EncryptionContext:PARAMETER_ARN": ["arn:p/bgp"]},
    }
    assert routers["Condition"]["ForAnyValue:StringEquals"]["kms:EncryptionContext:PARAMETER_ARN"] == [
        "arn:p/bgp",
        "arn:p/onprem",
    ]
