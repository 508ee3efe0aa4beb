#!/bin/sh
# One-off set-up of the demo network, run by the compose `init` service (as uid 10001):
# the CA and every node's identity, a random database password, and a synthetic cohort per TRE.
# Each party's files go to its own volume: the CA key never leaves the `ca` volume, and
# each agent sees only its own certificate and data. Safe to run again: it skips what exists.
set -eu

NODES="tre-a tre-b tre-c"

if [ ! -f /ca/ca/ca.pem ]; then
  fedtre ca init /ca --nodes tre-a,tre-b,tre-c --hosts coordinator,localhost,127.0.0.1
fi

# The coordinator's TLS identity and the private job-signing key (nodes get its public half).
cp -p /ca/coordinator/ca.pem /ca/coordinator/cert.pem /ca/coordinator/key.pem \
  /ca/coordinator/job-signing-key.pem /out/coordinator/
# People get API tokens from the `governance` step, once the coordinator runs.

if [ ! -f /out/secrets/postgres_password ]; then
  umask 022  # read by the postgres (uid 70) and grafana (uid 472) containers
  python -c 'import secrets; print(secrets.token_urlsafe(24))' > /out/secrets/postgres_password
  python -c 'import secrets; print(secrets.token_urlsafe(24))' > /out/secrets/grafana_admin_password
  printf 'postgresql+psycopg://fedtre:%s@postgres:5432/fedtre\n' \
    "$(cat /out/secrets/postgres_password)" > /out/secrets/database_url
fi

if [ ! -f /tmp/synth/tre-a.sqlite ]; then
  fedtre synth /tmp/synth --nodes 3 --rows 2000 --format sqlite --force
fi
for node in $NODES; do
  mkdir -p "/out/$node/tls" "/out/$node/data"
  cp -p /ca/nodes/$node/*.pem "/out/$node/tls/"
  [ -f "/out/$node/data/cohort.sqlite" ] || cp "/tmp/synth/$node.sqlite" "/out/$node/data/cohort.sqlite"
done
echo "demo network ready: nodes $NODES"
