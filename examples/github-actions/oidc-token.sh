#!/bin/bash
# Write GitHub Actions' OIDC token for AWS (audience sts.amazonaws.com) to
# $AWS_WEB_IDENTITY_TOKEN_FILE, where stagehost's credential chain (and the aws CLI) read it:
#
#   oidc-token.sh          once: fails (exit 1) when no token comes
#   oidc-token.sh loop &   once, then every 4 minutes until the job ends
#
# A token lives 5 minutes and a stage may first need AWS long after the job started;
# stagehost reads the file again each time its STS credentials are due for renewal, so the
# file must always hold a live one. It is replaced atomically (mv): never read half-written.
set -o pipefail
umask 077
: "${ACTIONS_ID_TOKEN_REQUEST_URL:?not set: the job needs 'permissions: id-token: write'}"
: "${AWS_WEB_IDENTITY_TOKEN_FILE:?not set: where should the token go?}"

fetch() {
  local token
  token=$(curl -sSf -H "Authorization: bearer $ACTIONS_ID_TOKEN_REQUEST_TOKEN" \
    "$ACTIONS_ID_TOKEN_REQUEST_URL&audience=sts.amazonaws.com" | jq -er .value) || return 1
  printf '%s' "$token" > "$AWS_WEB_IDENTITY_TOKEN_FILE.new" &&
    mv -f "$AWS_WEB_IDENTITY_TOKEN_FILE.new" "$AWS_WEB_IDENTITY_TOKEN_FILE"
}

fetch || { echo "oidc-token.sh: no token from GitHub's OIDC endpoint" >&2; exit 1; }
[ "${1:-}" = loop ] || exit 0
while sleep 240; do
  fetch || echo "oidc-token.sh: refresh failed; the previous token stays" >&2
done
