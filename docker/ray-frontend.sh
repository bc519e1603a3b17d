#!/bin/sh
# Entry point of a SieveDB front-end on a Ray cluster (docker-compose.yml's sievedb-fe* services).
# A Ray driver runs on a node of its cluster, so this container first joins the cluster as a node
# that offers no CPUs or GPUs (no replica is ever placed here; the node only gives the front-end a
# local raylet and object store), then becomes `sievedb serve` with the arguments it was given.
set -eu
: "${RAY_ADDRESS:?set RAY_ADDRESS to the Ray head (host:port of its GCS, e.g. ray-head:6379)}"
ray start --address="$RAY_ADDRESS" --num-cpus=0 --num-gpus=0 --disable-usage-stats
exec sievedb serve "$@"
