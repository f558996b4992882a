"""Placeholders the program's parameter values carry where a secret goes (infra/placeholders.py).

The agent fills them in from SecureString parameters and refuses to apply a config that
still contains one (a test pins these equal to the program's). The form
`<<WORDS WITH SPACES>>` has no `{{...}}` (SSM refuses those in a value) and is two words
where FRR's `neighbor ... password LINE` takes one, so FRR itself refuses a config where
one was left in rather than using it as the key.
"""

from __future__ import annotations

import re

BGP_PASSWORD = "<<BGP PASSWORD>>"
ONPREM_BGP_PASSWORD = "<<ONPREM BGP PASSWORD>>"

ALL = (BGP_PASSWORD, ONPREM_BGP_PASSWORD)
PATTERN = re.compile(r"<<[A-Z0-9][A-Z0-9 _-]*>>")
