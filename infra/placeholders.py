"""Placeholders: the literal text an SSM parameter value carries where a secret goes; pure.

The agent replaces them on the instance with the SecureString parameters it reads, so
no secret is ever in user data, in a String parameter or in `pulumi preview`. They are
defined once, by the agent (hostagent/overlay_agent/placeholders.py), which must know every
placeholder it fills; the program uses the same constants. Add a new one there.

The form `<<WORDS WITH SPACES>>` is chosen for two rules:
- SSM (PutParameter API reference, botocore's ssm service-2.json, PutParameterRequest.Value):
  "You can't include values wrapped in double brackets {{}} or {{ssm:parameter-name}} in a
  parameter value." So no `{{...}}`.
- FRR 8.4's `neighbor <peer> password LINE` takes exactly one word. A placeholder with a
  space that was never filled in leaves two words there, and `vtysh -C` / bgpd refuse the
  line ("% Unknown command") instead of taking the placeholder as the TCP MD5 key. For
  the same reason it can never equal a real password: the agent refuses whitespace in one.
"""

from __future__ import annotations

# The stack's BGP (TCP MD5) password for the sessions inside the stack (routers and docker
# hosts): SSM SecureString /<project>/<stack>/bgp-password. The on-prem (datacenter)
# sessions' own password: SecureString /<project>/<stack>/onprem-bgp-password, read by
# routers only (review F10: a docker host never holds the datacenter peering key).
# PATTERN: what any placeholder looks like, known or not: the agent refuses a config that
# still has one after filling in the ones it knows.
from overlay_agent.placeholders import ALL, BGP_PASSWORD, ONPREM_BGP_PASSWORD, PATTERN

__all__ = ["ALL", "BGP_PASSWORD", "ONPREM_BGP_PASSWORD", "PATTERN"]
