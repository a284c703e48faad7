"""JupyterHub config of stackhub: the same file on every backend.

All settings come from the stackhub config (stackhub.yaml, path in $STACKHUB_CONFIG; embedded
defaults otherwise); see spawner/core/config.py for every key. A bad file stops the hub with a message
naming the file and the key, and so does a size larger than the host.
"""

import sys

from spawner.core.config import ConfigError, load_config
from spawner.backends.docker.host import fit_to_engine
from spawner.hub.apply import apply_config
from spawner.hub.limits import limit_request_bodies

try:
    # a size larger than the host (cores, memory from the Docker engine) stops the hub here
    stackhub = fit_to_engine(load_config())
except ConfigError as e:
    print(f"stackhub: {e}", file=sys.stderr)
    sys.exit(1)

limit_request_bodies(stackhub.hub.request_body_limit)  # before JupyterHub makes its HTTPServer
apply_config(get_config(), stackhub)  # noqa: F821 (get_config is given by JupyterHub)
