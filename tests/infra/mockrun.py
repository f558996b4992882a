"""The mock harness lives in infra/mockrun.py (the preflight uses it too); tests import it from here or there."""
from infra.mockrun import *  # noqa: F403 - this module re-exports the harness under its old name
from infra.mockrun import (ACCOUNT, AMI, ONPREM_PASSWORD, PASSWORD, VPC_IPV6,  # noqa: F401 - re-exported
                           RecordingMocks, Recorded, Run, cli_config, mock_id, route_server_endpoint_address,
                           run_program)
