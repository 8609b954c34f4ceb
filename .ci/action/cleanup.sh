#!/usr/bin/env bash
# The Action's post step: the cluster goes when the job ends, pass or fail.
set -uo pipefail
"${KCLUSTER:-kcluster}" delete --name "${INPUT_CLUSTER_NAME:-kcluster}"
