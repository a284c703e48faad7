"""`make bench`: a load tool in the spirit of jupyterhub/hubtraf, run side by side with stock JupyterHub.

N simulated attendees go the way a browser does (login page, login form, spawn form with a tag, the
spawn progress stream, the lab, a kernel through the proxy's websocket that runs a cell), against a
stackhub deployment and a stock JupyterHub + DockerSpawner on the same engine, the same stack image,
the same login kind and network kind, in interleaved rounds (ABBA), so each ratio is measured in one
session under the same noise.

- ``scenario``: the run's parameters (validated) and the interleaved schedule: pure.
- ``stats``: percentiles, per-round summaries, the result JSON and its tables: pure.
- ``attendee``: one attendee's walk through the hub (requests + tornado's websocket client).
- ``targets``: the two deployments (stackhub's own ``Deployment``; stock JupyterHub in a container).
- ``monitor``: hub CPU/RSS from the containers' cgroups, proxy and hub API latency probes.
- ``plot``: ready-over-time as a PNG (matplotlib, the ``bench`` extra).
"""
