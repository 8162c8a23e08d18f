"""The deployment entry points: ``assay.collab.deploy:server_app`` and ``assay.collab.deploy:client_app``
(``[tool.flwr.app.components]`` of a Flower App, see experiments/collaborative/flower-app). They read
the run directory from the run config ``run-dir`` and a client's index from its node config
``partition-id`` (``flower-supernode --node-config "partition-id=0 num-partitions=4"``)."""

from assay.collab.apps import make_client_app
from assay.collab.server import make_server_app

server_app = make_server_app()
client_app = make_client_app()
