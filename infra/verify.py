"""`python -m infra.verify STACK`: checks what a real `pulumi up` built (boto3) against the plan; prints pass/fail."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable

from infra.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, common_parser
from infra.config import PROJECT, ConfigError
from infra.iam import policy_problems, reads_parameter
from infra.parameters import build_parameters, onprem_password_name, password_name, route_server_doc
from infra.plan import OverlayPlan, build_plan
from infra.rules import (
    Rule,
    failover_targets,
    members_ingress,
    normalize,
    onprem_ingress,
    route_server_ingress,
    router_for_az,
)
from infra.stackfile import load_stack
from overlay_agent.texttable import text_table


@dataclass(frozen=True)
class Check:
    check: str
    subject: str
    ok: bool
    detail: str = ""


def _tagged(stack: str, name: str | None = None) -> list[dict[str, Any]]:
    filters = [{"Name": "tag:project", "Values": [PROJECT]}, {"Name": "tag:stack", "Values": [stack]}]
    if name:
        filters.append({"Name": "tag:Name", "Values": [f"{stack}-{name}"]})
    return filters


def _rules_of(group: dict[str, Any]) -> list[Rule]:
    """EC2's IpPermissions as Rules (sources that are the group itself become `self`)."""
    out = []
    for perm in group.get("IpPermissions", []):
        proto = perm["IpProtocol"]
        proto = {"58": "icmpv6", "1": "icmp", "6": "tcp", "17": "udp"}.get(proto, proto)
        self_ = any(p.get("GroupId") == group["GroupId"] for p in perm.get("UserIdGroupPairs", []))
        others = [p["GroupId"] for p in perm.get("UserIdGroupPairs", []) if p.get("GroupId") != group["GroupId"]]
        out.append(
            Rule(
                "",
                proto,
                perm.get("FromPort", 0),
                perm.get("ToPort", 0),
                tuple(r["CidrIp"] for r in perm.get("IpRanges", [])) + tuple(f"sg:{g}" for g in others),
                tuple(r["CidrIpv6"] for r in perm.get("Ipv6Ranges", [])),
                self_,
            )
        )
    return out


def _describe_rules(rules: set[tuple[Any, ...]]) -> str:
    return "; ".join(
        f"{p}{'' if lo is None else f' {lo}-{hi}'} from {', '.join([*v4, *v6] + (['self'] if s else []))}"
        for p, lo, hi, v4, v6, s in sorted(rules, key=str)
    )


class Verifier:
    """Each check appends Check rows; nothing raises for a wrong resource, only for API errors."""

    def __init__(self, plan: OverlayPlan, ec2: Any, ssm: Any, frr_text: Callable[[str], str], iam: Any = None):
        self.plan, self.ec2, self.ssm, self.frr_text, self.iam = plan, ec2, ssm, frr_text, iam
        self.rows: list[Check] = []
        self.eni_ids: dict[str, str] = {}
        self.eni_subnets: dict[str, str] = {}
        # routeServer mode: endpoint addresses by subnet id (from DescribeRouteServerEndpoints).
        self.endpoints_by_subnet: dict[str, list[str]] = {}

    def add(self, check: str, subject: str, ok: bool, detail: str = "") -> None:
        self.rows.append(Check(check, subject, ok, detail))

    def run(self) -> list[Check]:
        self.instances_and_enis()
        if self.plan.vpc_failover == "routeServer":
            self.route_server()
        self.routes()
        self.security_groups()
        self.parameters()
        if self.iam is not None:
            self.instance_roles()
        return self.rows

    def instances_and_enis(self) -> None:
        stack = self.plan.stack
        for inst in self.plan.instances:
            enis = self.ec2.describe_network_interfaces(Filters=_tagged(stack, inst.name))["NetworkInterfaces"]
            if len(enis) != 1:
                self.add("eni", inst.name, False, f"{len(enis)} ENIs tagged {stack}-{inst.name} (want 1)")
                continue
            eni = enis[0]
            self.eni_ids[inst.name] = eni["NetworkInterfaceId"]
            self.eni_subnets[inst.name] = eni.get("SubnetId", "")
            self.add(
                "eni address",
                inst.name,
                eni["PrivateIpAddress"] == str(inst.private_ip),
                f"{eni['PrivateIpAddress']} (plan {inst.private_ip})",
            )
            self.add(
                "eni source/dest check off",
                inst.name,
                eni.get("SourceDestCheck") is False,
                f"SourceDestCheck={eni.get('SourceDestCheck')}",
            )
            reservations = self.ec2.describe_instances(
                Filters=_tagged(stack, inst.name)
                + [{"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]}]
            )["Reservations"]
            found = [i for r in reservations for i in r["Instances"]]
            if len(found) != 1:
                self.add("instance", inst.name, False, f"{len(found)} instances tagged {stack}-{inst.name} (want 1)")
                continue
            ec2i = found[0]
            attached = [n["NetworkInterfaceId"] for n in ec2i.get("NetworkInterfaces", [])]
            self.add(
                "instance on its eni",
                inst.name,
                eni["NetworkInterfaceId"] in attached,
                f"{eni['NetworkInterfaceId']} in {attached}",
            )
            tokens = ec2i.get("MetadataOptions", {}).get("HttpTokens")
            self.add("imdsv2 required", inst.name, tokens == "required", f"HttpTokens={tokens}")
            self.add("no ssh key", inst.name, not ec2i.get("KeyName"), f"KeyName={ec2i.get('KeyName')}")
            root = next(
                (b for b in ec2i.get("BlockDeviceMappings", []) if b["DeviceName"] == ec2i.get("RootDeviceName")), None
            )
            if root is None:
                self.add("root volume encrypted gp3", inst.name, False, "no root volume mapping")
                continue
            vol = self.ec2.describe_volumes(VolumeIds=[root["Ebs"]["VolumeId"]])["Volumes"][0]
            self.add(
                "root volume encrypted gp3",
                inst.name,
                vol.get("Encrypted") is True and vol.get("VolumeType") == "gp3",
                f"Encrypted={vol.get('Encrypted')} VolumeType={vol.get('VolumeType')}",
            )

    def routes(self) -> None:
        """Each table sends the pools to its AZ's router ENI (static mode: each host block to its host)."""
        plan = self.plan
        for az in plan.azs:
            for kind in ("public", "private"):
                tables = self.ec2.describe_route_tables(Filters=_tagged(plan.stack, f"{kind}-{az}"))["RouteTables"]
                subject = f"{plan.stack}-{kind}-{az}"
                if len(tables) != 1:
                    self.add("pool routes", subject, False, f"{len(tables)} route tables (want 1)")
                    continue
                have = {
                    (r.get("DestinationCidrBlock") or r.get("DestinationIpv6CidrBlock")): r.get("NetworkInterfaceId")
                    for r in tables[0]["Routes"]
                }
                # routeServer: the route server's FIB puts the preferred router in every table.
                router = (
                    router_for_az(plan, az)
                    if plan.vpc_failover != "routeServer"
                    else next(pref for a, pref, _ in failover_targets(plan) if a == az)
                )
                want = {str(p): (router, self.eni_ids.get(router)) for p in plan.pools_v4 + plan.pools_v6}
                if plan.routing_mode == "static":
                    for h in plan.hosts:
                        want.update({str(b): (h.name, self.eni_ids.get(h.name)) for b in (h.block_v4, h.block_v6) if b})
                wrong = [
                    f"{dest} -> {have.get(dest) or 'nothing'} (want {who})"
                    for dest, (who, eni) in sorted(want.items())
                    if eni is None or have.get(dest) != eni
                ]
                self.add(
                    "pool routes",
                    subject,
                    not wrong,
                    f"{len(want)} routes as planned" if not wrong else "; ".join(wrong[:4]),
                )

    def route_server(self) -> None:
        """The route server, its VPC association, an endpoint per router subnet, one peer per
        router with BGP and BFD up, and propagation to every route table."""
        plan, stack = self.plan, self.plan.stack
        servers = self.ec2.describe_route_servers(Filters=_tagged(stack, "route-server"))["RouteServers"]
        servers = [rs for rs in servers if rs.get("State") != "deleted"]
        if len(servers) != 1:
            self.add("route server", f"{stack}-route-server", False, f"{len(servers)} route servers (want 1)")
            return
        rs = servers[0]
        rs_id = rs["RouteServerId"]
        ok = (
            rs.get("State") == "available"
            and rs.get("AmazonSideAsn") == plan.route_server_asn
            and rs.get("PersistRoutesState") == "disabled"
        )
        self.add(
            "route server",
            rs_id,
            ok,
            f"State={rs.get('State')} AmazonSideAsn={rs.get('AmazonSideAsn')} "
            f"(plan {plan.route_server_asn}) PersistRoutesState={rs.get('PersistRoutesState')}",
        )
        assocs = self.ec2.get_route_server_associations(RouteServerId=rs_id)["RouteServerAssociations"]
        self.add(
            "route server associated",
            rs_id,
            any(a.get("State") == "associated" for a in assocs),
            "; ".join(f"{a.get('VpcId')} {a.get('State')}" for a in assocs) or "no association",
        )

        rs_filter = [{"Name": "route-server-id", "Values": [rs_id]}]
        endpoints = self.ec2.describe_route_server_endpoints(Filters=rs_filter)["RouteServerEndpoints"]
        endpoints = [e for e in endpoints if e.get("State") not in ("deleted", "deleting")]
        for e in endpoints:
            self.endpoints_by_subnet.setdefault(e["SubnetId"], []).append(e.get("EniAddress", ""))
        for r in plan.routers:
            subnet = self.eni_subnets.get(r.name)
            mine = [e for e in endpoints if e["SubnetId"] == subnet]
            self.add(
                "route server endpoint",
                f"{r.name} subnet {subnet}",
                bool(mine) and all(e.get("State") == "available" for e in mine),
                "; ".join(f"{e['RouteServerEndpointId']} {e.get('EniAddress')} {e.get('State')}" for e in mine)
                or "no endpoint in the router's subnet",
            )
        peers = self.ec2.describe_route_server_peers(Filters=rs_filter)["RouteServerPeers"]
        peers = [p for p in peers if p.get("State") not in ("deleted", "deleting")]
        for r in plan.routers:
            mine = [p for p in peers if p.get("PeerAddress") == str(r.private_ip)]
            if len(mine) != 1:
                self.add("route server peer up", r.name, False, f"{len(mine)} peers for {r.private_ip} (want 1)")
                continue
            p = mine[0]
            bgp = (p.get("BgpStatus") or {}).get("Status")
            bfd = (p.get("BfdStatus") or {}).get("Status")
            opts = p.get("BgpOptions") or {}
            ok = (
                p.get("State") == "available"
                and bgp == "up"
                and bfd == "up"
                and opts.get("PeerAsn") == r.asn
                and opts.get("PeerLivenessDetection") == "bfd"
            )
            self.add(
                "route server peer up",
                r.name,
                ok,
                f"{p['RouteServerPeerId']} State={p.get('State')} BGP={bgp} BFD={bfd} "
                f"PeerAsn={opts.get('PeerAsn')} liveness={opts.get('PeerLivenessDetection')}"
                + (f" ({p['FailureReason']})" if p.get("FailureReason") else ""),
            )
        props = self.ec2.get_route_server_propagations(RouteServerId=rs_id)["RouteServerPropagations"]
        propagated = {p["RouteTableId"] for p in props if p.get("State") == "available"}
        for az in plan.azs:
            for kind in ("public", "private"):
                tables = self.ec2.describe_route_tables(Filters=_tagged(stack, f"{kind}-{az}"))["RouteTables"]
                tid = tables[0]["RouteTableId"] if len(tables) == 1 else None
                self.add(
                    "route server propagation",
                    f"{stack}-{kind}-{az}",
                    tid in propagated,
                    f"{tid} {'propagated' if tid in propagated else 'not propagated'}",
                )

    def security_groups(self) -> None:
        stack = self.plan.stack
        wanted: dict[str, Callable[[str | None], list[Rule]]] = {"members": lambda v6: members_ingress(self.plan, v6)}
        if self.plan.onprem:
            wanted["onprem"] = lambda v6: onprem_ingress(self.plan)
        if self.plan.vpc_failover == "routeServer":
            wanted["route-server"] = lambda v6: route_server_ingress(
                [a for addrs in self.endpoints_by_subnet.values() for a in addrs]
            )
        for name, rules_for in wanted.items():
            groups = self.ec2.describe_security_groups(Filters=_tagged(stack, name))["SecurityGroups"]
            if len(groups) != 1:
                self.add("security group rules", f"{stack}-{name}", False, f"{len(groups)} groups (want 1)")
                continue
            group = groups[0]
            vpc = self.ec2.describe_vpcs(VpcIds=[group["VpcId"]])["Vpcs"][0]
            v6 = next((a["Ipv6CidrBlock"] for a in vpc.get("Ipv6CidrBlockAssociationSet", [])), None)
            want, got = normalize(rules_for(v6)), normalize(_rules_of(group))
            detail = "as planned"
            if want != got:
                parts = []
                if got - want:
                    parts.append(f"unexpected: {_describe_rules(got - want)}")
                if want - got:
                    parts.append(f"missing: {_describe_rules(want - got)}")
                detail = " | ".join(parts)
            self.add("security group rules", f"{stack}-{name}", want == got, detail)

    def vpc_ipv6(self) -> str | None:
        """The deployed VPC's IPv6 block (routers' `vpc` parameter), through the members group's VPC."""
        groups = self.ec2.describe_security_groups(Filters=_tagged(self.plan.stack, "members"))["SecurityGroups"]
        if not groups:
            return None
        vpc = self.ec2.describe_vpcs(VpcIds=[groups[0]["VpcId"]])["Vpcs"][0]
        return next((a["Ipv6CidrBlock"] for a in vpc.get("Ipv6CidrBlockAssociationSet", [])), None)

    def parameters(self) -> None:
        route_server = None
        if self.plan.vpc_failover == "routeServer":

            def route_server(name: str) -> str | None:
                if name not in {r.name for r in self.plan.routers}:
                    return None
                return route_server_doc(self.plan, self.endpoints_by_subnet.get(self.eni_subnets.get(name, ""), []))

        want = build_parameters(
            self.plan, self.frr_text, route_server=route_server, vpc_ipv6=self.vpc_ipv6() if self.plan.ipv6 else None
        )
        root = f"/{self.plan.project}/{self.plan.stack}"
        got: dict[str, dict[str, Any]] = {}
        for page in self.ssm.get_paginator("get_parameters_by_path").paginate(Path=root, Recursive=True):
            for p in page["Parameters"]:
                got[p["Name"]] = p
        bad = []
        for name, p in sorted(want.items()):
            have = got.get(name)
            if have is None:
                bad.append(f"{name} missing")
            elif have["Type"] != p.type:
                bad.append(f"{name} is {have['Type']} (want {p.type})")
            # Without decryption a SecureString's value is ciphertext: only its presence counts.
            elif p.type == "String" and have["Value"] != p.value:
                bad.append(f"{name} differs from the plan")
        extra = sorted(set(got) - set(want))
        bad += [f"{name} not in the plan" for name in extra]
        self.add(
            "parameters equal the plan",
            root,
            not bad,
            f"{len(want)} as planned"
            if not bad
            else f"{len(bad)} wrong: " + "; ".join(bad[:5]) + (" ..." if len(bad) > 5 else ""),
        )
        self.add(
            "bgp password is a SecureString",
            password_name(self.plan),
            got.get(password_name(self.plan), {}).get("Type") == "SecureString",
            "present" if password_name(self.plan) in got else "missing",
        )
        self.password_key()

    def instance_roles(self) -> None:
        """The stack's roles (IAM path /<project>/<stack>/): no managed policy attached (the
        review's F9: AmazonSSMManagedInstanceCore reads every parameter of the account), and
        no inline statement reading parameters or decrypting beyond the stack (infra.iam)."""
        path = f"/{self.plan.project}/{self.plan.stack}/"
        roles = [r for page in self.iam.get_paginator("list_roles").paginate(PathPrefix=path) for r in page["Roles"]]
        if not roles:
            self.add("instance role policies", path, False, "no roles under this IAM path")
            return
        onprem = onprem_password_name(self.plan)
        for role in sorted(roles, key=lambda r: r["RoleName"]):
            name = role["RoleName"]
            # Only the routers' role may read the on-prem password (review F10); a role
            # without the program's kind tag counts as not the routers'.
            tags = {t["Key"]: t["Value"] for t in self.iam.list_role_tags(RoleName=name).get("Tags", [])}
            router = tags.get("overlay-role") == "router"
            attached = [
                p["PolicyArn"]
                for page in self.iam.get_paginator("list_attached_role_policies").paginate(RoleName=name)
                for p in page["AttachedPolicies"]
            ]
            problems = [f"managed policy attached: {arn}" for arn in attached]
            inline = [
                n
                for page in self.iam.get_paginator("list_role_policies").paginate(RoleName=name)
                for n in page["PolicyNames"]
            ]
            for pname in inline:
                doc = self.iam.get_role_policy(RoleName=name, PolicyName=pname)["PolicyDocument"]
                if isinstance(doc, str):  # boto3 decodes it; a raw endpoint may not
                    doc = json.loads(urllib.parse.unquote(doc))
                problems += [f"{pname}: {p}" for p in policy_problems(doc, f"/{self.plan.project}/{self.plan.stack}")]
                if not router:
                    problems += [
                        f"{pname}: {sid}: reads {onprem} (routers only)" for sid in reads_parameter(doc, onprem)
                    ]
            self.add(
                "instance role policies",
                name,
                not problems,
                f"{len(inline)} inline, none too broad" if not problems else "; ".join(problems[:4]),
            )

    def password_key(self) -> None:
        """The BGP password(s) under a customer-managed key, not the account-wide aws/ssm."""
        for name in [password_name(self.plan)] + ([onprem_password_name(self.plan)] if self.plan.onprem else []):
            found = self.ssm.describe_parameters(ParameterFilters=[{"Key": "Name", "Values": [name]}])["Parameters"]
            key = found[0].get("KeyId") if found else None
            self.add("bgp password under the stack's key", name, bool(key) and key != "alias/aws/ssm", f"KeyId={key}")


def table(rows: list[Check]) -> str:
    data = [("PASS" if r.ok else "FAIL", r.check, r.subject, r.detail) for r in rows]
    return "\n".join(text_table(("result", "check", "subject", "detail"), data, rule=True)) + "\n"


def parser() -> argparse.ArgumentParser:
    parser = common_parser("python -m infra.verify", __doc__)
    parser.add_argument("stack", help="stack name: plans stacks/Pulumi.STACK.yaml and checks its region")
    parser.add_argument(
        "--endpoint-url",
        default=os.environ.get("AWS_ENDPOINT_URL"),
        help="AWS API endpoint (default: AWS's own, or $AWS_ENDPOINT_URL)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        plan = build_plan(load_stack(args.stack))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    import boto3
    import botocore.exceptions
    from infra.render import render_frr

    session = boto3.session.Session(region_name=plan.region)
    ec2 = session.client("ec2", endpoint_url=args.endpoint_url)
    ssm = session.client("ssm", endpoint_url=args.endpoint_url)
    iam = session.client("iam", endpoint_url=args.endpoint_url)
    try:
        rows = Verifier(plan, ec2, ssm, lambda name: render_frr(plan, name), iam).run()
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        print(f"error: stack {plan.stack} ({plan.region}): {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    sys.stdout.write(table(rows))
    failed = sum(not r.ok for r in rows)
    print(f"\n{len(rows) - failed} passed, {failed} failed ({plan.stack}, {plan.region})")
    return EXIT_FAILED if failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
