#!/bin/sh
# One-off governance set-up of the demo network, run by the compose `governance` service
# (as uid 10001) once the coordinator is healthy: the first admin, a researcher and an
# approver with API tokens, and the project "default" the demo's jobs run under.
# Each person's folder (ca.pem + token, mode 0600) goes to the users volume. Safe to run
# again: it skips what exists.
set -eu

COORDINATOR_TLS=${COORDINATOR_TLS:-/etc/fedtre/tls}
USERS=${USERS:-/out/users}
export FEDTRE_COORDINATOR=${FEDTRE_COORDINATOR:-coordinator:50052}

if [ ! -f "$USERS/admin/token" ]; then
  fedtre coordinator bootstrap-admin admin --out "$USERS/admin" --tls-dir "$COORDINATOR_TLS"
fi
export FEDTRE_IDENTITY="$USERS/admin"

for person in researcher:researcher approver:approver; do
  name=${person%%:*}
  role=${person##*:}
  if [ ! -f "$USERS/$name/token" ]; then
    fedtre users add "$name" --role "$role" >/dev/null 2>&1 || true  # exists after a partial run
    fedtre tokens issue "$name" --out "$USERS/$name" --description "compose demo"
  fi
done

if ! fedtre projects show default >/dev/null 2>&1; then
  fedtre projects create default --expires "$(date -u -d '+365 days' +%Y-%m-%d)" \
    --nodes tre-a,tre-b,tre-c --datasets cohort --analyses count,crosstab,summary \
    --members researcher --description "the compose demo network"
fi
echo "governance ready: admin, researcher, approver; project default"
