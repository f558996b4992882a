"""Runs the Pulumi program the way the CLI does (config as strings, infra/ as __main__) under recording mocks.

No credentials, no Pulumi CLI, no AWS: the tests (tests/infra) and the preflight
(infra/preflight.py) both evaluate the program through this one harness. The mocks return
plausible computed outputs (ids, ARNs, EIPs, the VPC's IPv6 block) for what the program
reads back; everything else a resource gets is exactly the inputs the program gave it.
"""

from __future__ import annotations

import contextvars
import copy
import json
import os
import runpy
import zlib
from dataclasses import dataclass, field
from typing import Any, cast

import pulumi
import yaml
from pulumi.runtime import mocks as pmocks
from pulumi.runtime import settings
from pulumi.runtime.stack import Stack

from infra.stackfile import REPO_ROOT, stack_path

PASSWORD = "not-a-real-password-7f3a"
ONPREM_PASSWORD = "not-a-real-onprem-password-2c9e"
AMI = {"x86_64": "ami-0debian12amd64", "arm64": "ami-0debian12arm64"}
VPC_IPV6 = "2600:1f18:4a3:6c00::/56"
ACCOUNT = "123456789012"


def route_server_endpoint_address(name: str) -> str:
    """What AWS would pick for a route server endpoint, from its name (stable across runs)."""
    return f"198.18.{zlib.crc32(name.encode()) % 250}.{zlib.crc32(name.encode()[::-1]) % 250 + 1}"


def mock_id(name: str) -> str:
    """The id the mocks give the resource named `name` (what other resources' inputs hold)."""
    return f"{name}-id"


@dataclass
class Recorded:
    urn: str
    type: str
    name: str
    inputs: dict[str, Any]
    parent: str
    provider: str
    custom: bool
    protect: bool
    ignore_changes: list[str]
    dependencies: list[str]
    delete_before_replace: bool = False
    outputs: dict[str, Any] = field(default_factory=dict)  # registered (components)


class RecordingMocks(pulumi.runtime.Mocks):
    """Returns plausible computed outputs (ids, ARNs, EIPs) for what the program reads back."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.inputs: dict[tuple[str, str], dict[str, Any]] = {}

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict[str, Any]]:
        self.inputs[(args.typ, args.name)] = args.inputs
        outs = dict(args.inputs)
        rid = mock_id(args.name)
        if args.typ == "aws:ec2/vpc:Vpc":
            outs["ipv6CidrBlock"] = VPC_IPV6 if args.inputs.get("assignGeneratedIpv6CidrBlock") else ""
        elif args.typ == "aws:ec2/eip:Eip":
            # From the name, not the call order: registration order varies between runs.
            outs["publicIp"] = f"203.0.113.{zlib.crc32(args.name.encode()) % 250 + 1}"
            outs["allocationId"] = f"eipalloc-{args.name}"
        elif args.typ == "aws:s3/bucket:Bucket":
            outs["bucket"] = f"{args.name}-1a2b3c"
            outs["arn"] = f"arn:aws:s3:::{args.name}-1a2b3c"
        elif args.typ == "aws:iam/role:Role":
            outs["name"] = f"{args.name}-5e6f"
            outs["arn"] = f"arn:aws:iam::123456789012:role/{args.name}-5e6f"
        elif args.typ == "aws:iam/instanceProfile:InstanceProfile":
            outs["name"] = f"{args.name}-7a8b"
        elif args.typ == "aws:vpc/routeServer:RouteServer":
            outs["routeServerId"] = f"rs-{args.name}"
        elif args.typ == "aws:vpc/routeServerEndpoint:RouteServerEndpoint":
            outs["routeServerEndpointId"] = f"rse-{args.name}"
            outs["eniAddress"] = route_server_endpoint_address(args.name)
            outs["eniId"] = f"eni-{args.name}"
        elif args.typ == "aws:vpc/routeServerPeer:RouteServerPeer":
            outs["routeServerPeerId"] = f"rsp-{args.name}"
        elif args.typ == "aws:imagebuilder/image:Image":
            # The AMI Image Builder made, in the build's own region.
            outs["outputResources"] = [{"amis": [{"image": f"ami-{zlib.crc32(args.name.encode()):08x}", "region": ""}]}]
        elif args.typ.startswith("aws:imagebuilder/"):
            # As AWS forms them: kind/<lower-cased name>[/<version>[/<build>]].
            kind = {"Component": "component", "ImageRecipe": "image-recipe"}.get(
                args.typ.split(":")[-1], "infrastructure-configuration"
            )
            arn = f"arn:aws:imagebuilder:us-east-1:{ACCOUNT}:{kind}/{str(args.inputs.get('name', args.name)).lower()}"
            if "version" in args.inputs:
                arn += f"/{args.inputs['version']}" + ("/1" if kind == "component" else "")
            outs["arn"] = arn
        elif args.typ == "aws:kms/key:Key":
            outs["keyId"] = f"{args.name}-0f1e2d"
            outs["arn"] = f"arn:aws:kms:us-east-1:{ACCOUNT}:key/{args.name}-0f1e2d"
        return rid, outs

    # The bare dict, not the (dict, failures) tuple Mocks.call declares: the mock monitor
    # takes either (pulumi/runtime/mocks.py MockMonitor.Invoke), and no call here fails.
    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:  # type: ignore[override]  # see above
        self.calls.append((args.token, dict(args.args)))
        if args.token == "aws:ec2/getAmi:getAmi":
            arch = next(f["values"][0] for f in args.args["filters"] if f["name"] == "architecture")
            return {"id": AMI[arch], "architecture": arch}
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {
                "accountId": ACCOUNT,
                "arn": f"arn:aws:iam::{ACCOUNT}:user/deployer",
                "userId": "AIDA0EXAMPLE",
                "id": ACCOUNT,
            }
        return {}


class RecordingMonitor(pmocks.MockMonitor):
    """Also records what the engine would see: parent, provider, protect, ignoreChanges."""

    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        self.mocks_ = mocks
        self.recorded: dict[str, Recorded] = {}

    # MockMonitor's methods take and return gRPC messages and are unannotated in pulumi.
    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]  # unannotated in pulumi
        if request.type != "pulumi:pulumi:Stack":
            inputs = self.mocks_.inputs.get((request.type, request.name), {})
            self.recorded[response.urn] = Recorded(
                urn=response.urn,
                type=request.type,
                name=request.name,
                inputs=inputs,
                parent=request.parent,
                provider=request.provider,
                custom=request.custom,
                protect=request.protect,
                ignore_changes=list(request.ignoreChanges),
                dependencies=list(request.dependencies),
                delete_before_replace=request.deleteBeforeReplace,
            )
        return response

    def RegisterResourceOutputs(self, request: Any) -> Any:
        if request.urn in self.recorded:
            self.recorded[request.urn].outputs = pulumi.runtime.rpc.deserialize_properties(request.outputs)
        return super().RegisterResourceOutputs(request)  # type: ignore[no-untyped-call]  # unannotated in pulumi


@dataclass
class Run:
    stack: str
    resources: list[Recorded]
    outputs: dict[str, Any]
    calls: list[tuple[str, dict[str, Any]]]

    def of_type(self, typ: str) -> list[Recorded]:
        return [r for r in self.resources if r.type == typ]

    def named(self, name: str) -> Recorded:
        return next(r for r in self.resources if r.name == name)

    def by_urn(self, urn: str) -> Recorded:
        return next(r for r in self.resources if r.urn == urn)


def cli_config(
    stack: str,
    changes: dict[str, Any] | None = None,
    password: str | None = PASSWORD,
    raw: dict[str, Any] | None = None,
    onprem_password: str | None = ONPREM_PASSWORD,
) -> tuple[dict[str, str], list[str]]:
    """The stack file's config as the CLI passes it: every value a string, objects as JSON.

    `changes` maps dotted keys ("hosts.count") to new values. `raw`, when given, is the
    whole `overlay:*` config (namespace stripped) instead of the stack file's.
    """
    if raw is not None:
        values = {f"overlay:{k}": copy.deepcopy(v) for k, v in raw.items()}
    else:
        document = yaml.safe_load(stack_path(stack).read_text())
        values = copy.deepcopy(document["config"])
    for dotted, value in (changes or {}).items():
        top, *rest = dotted.split(".")
        key = f"overlay:{top}"
        if not rest:
            values[key] = value
            continue
        node = values.setdefault(key, {})
        for part in rest[:-1]:
            node = node.setdefault(part, {})
        node[rest[-1]] = value
    config = {k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}
    secret_keys = []
    if password is not None:
        config["overlay:bgpPassword"] = password
        secret_keys.append("overlay:bgpPassword")
    if onprem_password is not None:
        config["overlay:onpremBgpPassword"] = onprem_password
        secret_keys.append("overlay:onpremBgpPassword")
    return config, secret_keys


def run_program(
    stack: str,
    changes: dict[str, Any] | None = None,
    *,
    password: str | None = PASSWORD,
    secret_keys: list[str] | None = None,
    via_env: bool = False,
    raw: dict[str, Any] | None = None,
    onprem_password: str | None = ONPREM_PASSWORD,
) -> Run:
    """Evaluate infra/__main__.py for `stack` in a fresh Pulumi context; return what it registered.

    The config goes in through the runtime (as the language host sets it) or, with
    `via_env`, through PULUMI_CONFIG / PULUMI_CONFIG_SECRET_KEYS (the older hand-over).
    """
    config, keys = cli_config(stack, changes, password, raw, onprem_password)
    if secret_keys is not None:
        keys = secret_keys
    if not via_env:
        return contextvars.Context().run(_run, stack, config, keys)
    saved = {k: os.environ.get(k) for k in ("PULUMI_CONFIG", "PULUMI_CONFIG_SECRET_KEYS")}
    os.environ["PULUMI_CONFIG"], os.environ["PULUMI_CONFIG_SECRET_KEYS"] = json.dumps(config), json.dumps(keys)
    try:
        return contextvars.Context().run(_run, stack, {}, [])
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _run(stack: str, config: dict[str, str], secret_keys: list[str]) -> Run:
    mocks = RecordingMocks()
    monitor = RecordingMonitor(mocks)
    settings.ROOT.set(None)
    pulumi.runtime.set_mocks(mocks, project="overlay", stack=stack, preview=False, monitor=monitor)
    pulumi.runtime.set_all_config(config, secret_keys)
    captured: dict[str, Any] = {}

    @pulumi.runtime.test  # type: ignore[untyped-decorator]  # unannotated in pulumi
    def evaluate() -> pulumi.Output[None]:
        runpy.run_path(str(REPO_ROOT / "infra"), run_name="__main__")
        # The root resource the program registers is always a Stack (pulumi.runtime.stack).
        root = cast(Stack, settings.get_root_resource())
        return pulumi.Output.all(**root.outputs).apply(captured.update)

    evaluate()
    return Run(stack, list(monitor.recorded.values()), captured, mocks.calls)
