"""The Pulumi program, its pure plan and the plan report for routed containers on EC2."""
