"""The Pulumi program: reads and validates the stack config once, builds the plan, creates the components."""

from __future__ import annotations

import json
import re
from typing import Any, Callable, Sequence

import pulumi
import pulumi_aws as aws
from pulumi.runtime import config as runtime_config

from infra.agent_archive import BUNDLE_NAME, build_bundle
from infra.components.agent_package import AgentPackage, AgentPackageArgs
from infra.components.bgp_password import BgpPassword, BgpPasswordArgs
from infra.components.host import DockerHost, StaticRoutes
from infra.components.image import OverlayImage, OverlayImageArgs
from infra.components.instance import InstanceArgs
from infra.components.instance_role import InstanceRole, InstanceRoleArgs
from infra.components.network import Network, NetworkArgs
from infra.components.route_server import RouteServer, RouteServerArgs
from infra.components.router import RoutingInstance
from infra.components.routes import PoolRoutes, PoolRoutesArgs
from infra.components.security import SecurityGroups, SecurityGroupsArgs
from infra.config import PROJECT, SECRET_KEYS, TOP_KEYS, ConfigError, StackConfig, foreign_key_problem, parse
from infra.parameters import (
    Parameter,
    ParameterError,
    build_parameters,
    instance_path,
    onprem_password_name,
    password_name,
    root,
    route_server_doc,
    vpc_doc,
)
from infra.passwords import password_problem
from infra.plan import Host, OverlayPlan, Router, build_plan
from infra.plan.report import to_mermaid
from infra.render import RenderError, render_frr, render_onprem_frr, render_user_data

# The agent wheel and its hashed wheelhouse in one object (infra/agent_archive.py).
AGENT_KEY = f"agent/{BUNDLE_NAME}"
# Debian's official AMIs are published by this account (wiki.debian.org/Cloud/AmazonEC2Image).
DEBIAN_OWNER = "136693071363"
# AWS allows at most 1,000 routes per VPC route table (the default quota is 50).
MAX_ROUTES_PER_TABLE = 1000


def _set_keys() -> list[str]:
    """Every config key the stack sets, any namespace: the one place the program lists them,
    and the program's one read of Pulumi's internals.

    A key the schema does not have (`overlay:hostz`, `overlya:pools`) must be an error, not
    silently a default, and nothing public lists the keys (pulumi 3.272): `pulumi.Config`
    reads a key by name; `pulumi.runtime` exports `get_config_env()` (PULUMI_CONFIG, the older
    CLIs' hand-over) but not the map the language host fills with `set_all_config`
    (`pulumi.runtime.config.CONFIG`). Pulumi.yaml's declarations do not catch these either:
    the CLI checks the keys it declares and passes every other key through
    (pkg/workspace/config.go). The tests pin both hand-overs (tests/infra/test_program.py).
    """
    return sorted({*pulumi.runtime.get_config_env(), *runtime_config.CONFIG.get()})


def _decoded(key: str, value: Any) -> Any:
    # The CLI hands structured values over as JSON strings.
    if isinstance(value, str) and value.lstrip()[:1] in ("{", "["):
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            raise ConfigError(key, value, f"is not valid JSON ({exc.msg})") from None
        except RecursionError:
            raise ConfigError(key, value, "is nested too deeply") from None
    return value


def read_config() -> tuple[dict[str, Any], dict[str, str]]:
    """The `overlay:*` values through `pulumi.Config` (namespace stripped), and the secrets by key
    (`bgpPassword`, `onpremBgpPassword`).

    The secrets must be set as secrets: anything else would mean one sits in clear text in
    the stack file. Keys the schema does not have are passed on for parse() to refuse (with
    a "did you mean"); keys of other namespaces that look like ours are refused here.
    """
    conf = pulumi.Config(PROJECT)
    raw: dict[str, Any] = {}
    secrets: dict[str, str] = {}
    for key in _set_keys():
        problem = foreign_key_problem(key)
        if problem is not None:
            raise ConfigError(key, pulumi.runtime.get_config(key), problem)
        namespace, _, name = key.partition(":")
        if namespace == PROJECT and name and name not in TOP_KEYS and name not in SECRET_KEYS:
            raw[name] = _decoded(key, conf.get(name))
    for name in TOP_KEYS:
        value = conf.get(name)
        if value is not None:
            raw[name] = _decoded(conf.full_key(name), value)
    for name in SECRET_KEYS:
        value = conf.get(name)
        if value is None:
            continue
        key = conf.full_key(name)
        if not pulumi.runtime.is_config_secret(key) and key not in pulumi.runtime.get_config_secret_keys_env():
            raise ConfigError(key, "(hidden)", f"must be a secret: pulumi config set --secret {key} ...")
        secrets[name] = value
    return raw, secrets


def load_config(stack: str) -> tuple[StackConfig, str, str | None]:
    """The stack config, its BGP password and, with on-prem peers, the on-prem BGP password."""
    raw, secrets = read_config()
    cfg = parse(raw, stack)
    password = secrets.get("bgpPassword")
    if not password:
        raise ConfigError(
            f"{PROJECT}:bgpPassword", None, f"is required: pulumi config set --secret {PROJECT}:bgpPassword <password>"
        )
    problem = password_problem(str(password))
    if problem:
        raise ConfigError(f"{PROJECT}:bgpPassword", "(hidden)", problem)
    onprem = secrets.get("onpremBgpPassword")
    key = f"{PROJECT}:onpremBgpPassword"
    if not cfg.onprem:
        # Nothing peers with the datacenter: a password kept in the config is not published.
        return cfg, password, None
    if not onprem:
        names = ", ".join(o.name for o in cfg.onprem)
        raise ConfigError(
            key,
            None,
            f"is required for the on-prem peers ({names}): pulumi config set --secret "
            f"{key} <password> (the datacenter sessions' own key; docker hosts never hold it)",
        )
    problem = password_problem(str(onprem))
    if problem:
        raise ConfigError(key, "(hidden)", problem)
    if str(onprem) == str(password):
        raise ConfigError(
            key,
            "(hidden)",
            f"must differ from {PROJECT}:bgpPassword, which every docker host "
            "holds (review F10: a host never holds the datacenter peering key)",
        )
    return cfg, password, onprem


def architecture(instance_type: str) -> str:
    """Graviton families carry a `g` after the generation digit (m7g, c6gn, t4g)."""
    family = instance_type.split(".")[0]
    m = re.match(r"[a-z]+\d+([a-z-]*)", family)
    return "arm64" if m and "g" in m.group(1) else "x86_64"


def debian_ami(arch: str, provider: aws.Provider) -> pulumi.Output[str]:
    # Annotated here: mypy does not follow pulumi_aws (pyproject.toml [tool.mypy]).
    ami: pulumi.Output[str] = aws.ec2.get_ami_output(
        most_recent=True,
        owners=[DEBIAN_OWNER],
        filters=[
            {"name": "name", "values": [f"debian-12-{'arm64' if arch == 'arm64' else 'amd64'}-*"]},
            {"name": "architecture", "values": [arch]},
            {"name": "virtualization-type", "values": ["hvm"]},
        ],
        opts=pulumi.InvokeOutputOptions(provider=provider),
    ).id
    return ami


def check_static_routes(plan: OverlayPlan) -> None:
    if plan.routing_mode != "static":
        return
    per_host = 2 if plan.ipv6 else 1
    count = 2 + len(plan.pools_v4) + len(plan.pools_v6) + per_host * len(plan.hosts)
    if count > MAX_ROUTES_PER_TABLE:
        raise ConfigError(
            f"{PROJECT}:routing.mode",
            "static",
            f"{len(plan.hosts)} hosts need {count} routes per table; AWS allows "
            f"{MAX_ROUTES_PER_TABLE} (use mode router)",
        )


def pairing_table(plan: OverlayPlan) -> list[dict[str, Any]]:
    return [
        {
            "router": p.a.name,
            "peer": p.b.name,
            "kind": p.kind,
            "key": p.key,
            "interface": p.ifname,
            "router_inner_ipv4": str(p.a.inner_v4),
            "peer_inner_ipv4": str(p.b.inner_v4),
            "router_inner_ipv6": str(p.a.inner_v6) if p.a.inner_v6 else None,
            "peer_inner_ipv6": str(p.b.inner_v6) if p.b.inner_v6 else None,
            "mtu": p.mtu,
            "router_asn": p.a.asn,
            "peer_asn": p.b.asn,
        }
        for p in plan.pairings
    ]


def one_line_errors(stack: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` for an `apply`: its RenderError/ParameterError becomes the one-line RunError main()
    gives for errors outside apply. An exception inside an apply escapes main()'s handler and
    reaches the CLI wrapped in "While processing input ..." lines; RunError passes through
    unwrapped and the CLI prints its message alone (review F17)."""

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (ParameterError, RenderError) as exc:
            raise pulumi.RunError(f"stack {stack}: {exc}") from None

    return wrapped


def create(
    plan: OverlayPlan, password: pulumi.Input[str], onprem_password: pulumi.Input[str] | None = None
) -> dict[str, Any]:
    """Every resource of the stack from the plan; returns the stack outputs.

    The plan carries every setting; the passwords are the only inputs it does not hold
    (secrets: the plan is printed by `python -m infra.plan` and goes into reviews).
    """
    prod = plan.environment == "prod"
    stack_tags = {"project": plan.project, "stack": plan.stack, "environment": plan.environment, "managed-by": "pulumi"}
    provider = aws.Provider("aws", region=plan.region, default_tags={"tags": stack_tags})
    opts = pulumi.ResourceOptions(providers=[provider])

    network = Network("net", NetworkArgs(plan), opts)
    sgs = SecurityGroups(
        "sg", SecurityGroupsArgs(plan, network.vpc.id, network.vpc.ipv6_cidr_block if plan.ipv6 else None), opts
    )
    agent = AgentPackage("agent", AgentPackageArgs(plan.stack, build_bundle(), AGENT_KEY, force_destroy=not prod), opts)
    account = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(provider=provider)).account_id
    # One role per instance kind: the kinds read different secrets (docs/deploy.md). The
    # on-prem password is the routers' alone: a docker host never holds the datacenter key.
    values = {password_name(plan): password}
    secrets = {"router": [password_name(plan)], "host": [password_name(plan)]}
    if plan.onprem:
        if onprem_password is None:
            raise ConfigError(f"{PROJECT}:onpremBgpPassword", None, "is required for the on-prem peers")
        values[onprem_password_name(plan)] = onprem_password
        secrets["router"].append(onprem_password_name(plan))
    roles = {
        kind: InstanceRole(
            f"{kind}s",
            InstanceRoleArgs(
                region=plan.region,
                account=account,
                project=plan.project,
                stack=plan.stack,
                parameter_root=root(plan),
                secrets=secrets[kind],
                agent_object_arn=agent.object_arn,
                kind=kind,
            ),
            opts,
        )
        for kind in ("router", "host")
    }
    passwords = BgpPassword(
        "bgp-password",
        BgpPasswordArgs(
            region=plan.region,
            account=account,
            stack=plan.stack,
            values=values,
            readers=[(roles[kind].role.arn, secrets[kind]) for kind in ("router", "host")],
            prod=prod,
        ),
        opts,
    )
    policies = {kind: role.grant(passwords.key.arn) for kind, role in roles.items()}

    params: dict[str | None, list[Parameter]] = {}
    for p in build_parameters(plan, lambda name: render_frr(plan, name)).values():
        params.setdefault(p.instance, []).append(p)
    # The stack's own image per architecture (image/provision.sh on Debian's AMI, by EC2 Image
    # Builder), built in the first AZ's private subnet once its NAT egress works.
    first_az = plan.azs[0]
    types = {architecture(i.instance_type): i.instance_type for i in reversed(plan.instances)}
    amis = {
        arch: OverlayImage(
            f"image-{arch}",
            OverlayImageArgs(
                project=plan.project,
                stack=plan.stack,
                region=plan.region,
                account=account,
                arch=arch,
                parent_ami=debian_ami(arch, provider),
                instance_type=types[arch],
                subnet_id=network.subnets[(first_az, "private")].id,
                security_group_id=sgs.members.id,
                build_after=network.egress[(first_az, "private")],
            ),
            opts,
        ).ami_id
        for arch in sorted(types)
    }

    def args_for(inst: Router | Host, role: str, sg_ids: Sequence[pulumi.Input[str]], **extra: Any) -> InstanceArgs:
        path = instance_path(plan, inst.name)
        kind = "public" if role == "router" else "private"
        user_data = agent.bucket.bucket.apply(
            one_line_errors(
                plan.stack,
                lambda bucket, n=inst.name, p=path: render_user_data(
                    plan, n, bucket=bucket, agent_key=AGENT_KEY, parameter_path=p
                ),
            )
        )
        return InstanceArgs(
            plan_stack=plan.stack,
            region=plan.region,
            role=role,
            subnet_id=network.subnets[(inst.az, kind)].id,
            private_ip=str(inst.private_ip),
            security_group_ids=sg_ids,
            ami_id=amis[architecture(inst.instance_type)],
            instance_type=inst.instance_type,
            user_data=user_data,
            parameters=params[inst.name],
            parameter_path=path,
            instance_profile=roles[role].profile.name,
            ipv6=plan.ipv6,
            boot_after=[*network.egress[(inst.az, kind)], policies[role], agent.object],
            volume_tags=stack_tags,
            **extra,
        )

    router_sgs = [sgs.members.id] + ([sgs.onprem.id] if sgs.onprem else [])
    route_server = None
    if plan.vpc_failover == "routeServer":
        route_server = RouteServer(
            "route-server",
            RouteServerArgs(
                plan,
                network.vpc.id,
                {k: s.id for k, s in network.subnets.items()},
                {k: t.id for k, t in network.route_tables.items()},
            ),
            opts,
        )
        router_sgs.append(sgs.route_server_group(route_server.endpoint_addresses()).id)
    routers = {}
    for r in plan.routers:
        late = {}
        if route_server is not None:
            # The endpoints' addresses reach the router as a parameter the agent reads
            # (docs/vpc-failover.md); the value is an Output, the resource is not in an apply.
            late[f"{instance_path(plan, r.name)}/route-server"] = pulumi.Output.all(
                *route_server.router_doc_inputs(r.name)
            ).apply(lambda ips: route_server_doc(plan, list(ips)))
        if plan.ipv6:
            # The VPC's IPv6 block, denied from on-prem by the router's agent (docs/frr.md):
            # AWS assigns it when it creates the VPC.
            late[f"{instance_path(plan, r.name)}/vpc"] = network.vpc.ipv6_cidr_block.apply(
                lambda block: vpc_doc(plan, block)
            )
        args = args_for(r, "router", router_sgs, eip=r.eip, protect=prod, eip_after=[network.igw], late_parameters=late)
        routers[r.name] = RoutingInstance(r.name, args, opts)
        if route_server is not None:
            route_server.peer(r.name, after=[routers[r.name].eni])
    if route_server is None:
        # static: one fixed router ENI per AZ's tables; with routeServer the route server
        # writes the pool routes (one route per prefix per table either way).
        PoolRoutes(
            "pools",
            PoolRoutesArgs(
                plan, {k: t.id for k, t in network.route_tables.items()}, {n: r.eni.id for n, r in routers.items()}
            ),
            opts,
        )
    tables = {f"{kind}-{az}": t.id for (az, kind), t in network.route_tables.items()}
    for h in plan.hosts:
        static = None
        if plan.routing_mode == "static":
            static = StaticRoutes(tables, str(h.block_v4), str(h.block_v6) if h.block_v6 else None)
        DockerHost(
            h.name,
            args_for(
                h,
                "host",
                [sgs.members.id],
                ipv6_prefix=h.ipv6_delegation,
                root_volume_gb=h.root_volume_gb,
            ),
            static,
            opts,
        )

    eips = {n: r.public_ip for n, r in routers.items() if r.public_ip is not None}
    onprem_frr = pulumi.Output.all(**eips).apply(
        one_line_errors(
            plan.stack, lambda resolved: {o.name: render_onprem_frr(plan, o.name, dict(resolved)) for o in plan.onprem}
        )
    )
    return {
        "vpcId": network.vpc.id,
        "agentBucket": agent.bucket.bucket,
        "routerAddresses": {r.name: str(r.private_ip) for r in plan.routers},
        "routerEips": eips,
        "pairings": pairing_table(plan),
        "onpremFrr": onprem_frr,
        "topology": to_mermaid(plan),
        **(
            {"routeServerEndpoints": {az: e.eni_address for az, e in route_server.endpoints.items()}}
            if route_server is not None
            else {}
        ),
    }


def main() -> None:
    """Entry point (infra/__main__.py): one-line config errors, no traceback."""
    try:
        cfg, password, onprem_password = load_config(pulumi.get_stack())
        plan = build_plan(cfg)
        check_static_routes(plan)
    except ConfigError as exc:
        # RunError ends the program with this message alone (no Python traceback).
        raise pulumi.RunError(f"stack {pulumi.get_stack()}: {exc}") from None
    try:
        outputs = create(plan, password, onprem_password)
    except (ConfigError, ParameterError, RenderError) as exc:
        raise pulumi.RunError(f"stack {pulumi.get_stack()}: {exc}") from None
    for key, value in outputs.items():
        pulumi.export(key, value)
