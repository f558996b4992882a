"""The mock harness lives in infra/mockrun.py (the preflight uses it too); tests import it from here or there."""
from infra.mockrun import *  # noqa: F403 - this module re-exports the harness under its old name
from infra.mockrun import (ACCOUNT, AMI, PASSWORD, VPC_IPV6, RecordingMocks, Recorded, Run,  # noqa: F401 - re-exported
                           cli_config, mock_id, route_server_endpoint_address, run_program)
