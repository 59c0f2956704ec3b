"""The Prefect flows. Prefect's server telemetry is off by default here, as `make` sets it, for every way in
(`python -m flows.pipeline`, `flows.compare`, the `nmt-pipeline` script, an import): there is no network to send
it to, and the temporary server's telemetry writes raced the flow's on its sqlite database ("database is
locked" tracebacks)."""

import os

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
