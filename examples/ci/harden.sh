#!/usr/bin/env bash
# Harden a model on a harden service and fail the build when the audit's verdict is 'masked'.
#
#   examples/ci/harden.sh MODEL
#
# Environment (all optional except where the service needs them):
#   HARDEN_URL       the service (default http://127.0.0.1:8000), read by `harden`
#   HARDEN_API_KEY   its API key when it runs with HARDEN_AUTH=keys, read by `harden`
#   HARDEN_DATASET   dataset reference (default builtin:mnist)
#   HARDEN_CONFIG    a JSON file of the job spec (evaluation, method, mlflow, ...)
#   HARDEN_OUT       where the job's files and harden.sarif (the findings and tripped gates as
#                    SARIF 2.1.0, for code scanning) go (default harden-out)
#   HARDEN_FAIL_ON   the gates (default masked; e.g. masked,min-robust=0.5@linf:0.3)
#   HARDEN_BIN       the harden command (default: harden on PATH, else this checkout's .venv)
#
# Exit status: harden's own (`harden --help`): 0 the gates passed, 1 the job failed, 2 bad input
# or service unreachable, 3 a gate tripped (the files are written all the same).
set -euo pipefail

model=${1:?usage: harden.sh MODEL}
out=${HARDEN_OUT:-harden-out}
harden=${HARDEN_BIN:-}
if [[ -z $harden ]]; then
    if command -v harden >/dev/null; then
        harden=harden
    else
        harden="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/.venv/bin/harden"
    fi
fi

args=(submit "$model" --dataset "${HARDEN_DATASET:-builtin:mnist}" --wait --out "$out"
    --fail-on "${HARDEN_FAIL_ON:-masked}" --sarif "$out/harden.sarif")
if [[ -n ${HARDEN_CONFIG:-} ]]; then
    args+=(--config "$HARDEN_CONFIG")
fi

status=0
"$harden" "${args[@]}" || status=$?

# The verdict in one line (and in the GitHub Actions job summary when there is one).
verdict="no report"
if [[ -f $out/report.json ]]; then
    verdict=$(python3 -c 'import json, sys
v = json.load(open(sys.argv[1])).get("verdict") or {}
print(v.get("label", "not audited") + ": " + v.get("headline", "evaluation off"))' \
        "$out/report.json")
fi
echo "harden: exit $status; verdict $verdict"
if [[ -n ${GITHUB_STEP_SUMMARY:-} ]]; then
    printf '### harden\n\nexit %s\n\n%s\n' "$status" "$verdict" >>"$GITHUB_STEP_SUMMARY"
fi
if [[ $status -eq 3 && -n ${GITHUB_ACTIONS:-} ]]; then
    echo "::error title=harden::the verdict tripped --fail-on ${HARDEN_FAIL_ON:-masked}: $verdict"
fi
exit "$status"
