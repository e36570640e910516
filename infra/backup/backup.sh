#!/usr/bin/env bash
# Backs up each Vivier service's PostgreSQL schema to S3: one pg_dump (custom format) per schema,
# then a manifest.json that marks the backup complete.
#
#   BACKUP_S3_URI=s3://vivier-backups/prod BACKUP_DATABASE_URL=postgres://postgres:…@db/vivier \
#     infra/backup/backup.sh [service ...]
#
# Writes s3://…/prod/<UTC stamp>/<service>.dump for auth chat admin worker (or the services named),
# and s3://…/prod/<UTC stamp>/manifest.json: per service the time its snapshot was taken, the
# applied migrations, size and SHA-256. restore.sh reads them back. docs/operations.md
# ("Backups and restore") has the schedule, retention and the restore procedure.
#
# Environment:
#   BACKUP_S3_URI            (required) s3://bucket/prefix the backups go under
#   BACKUP_DATABASE_URL      a connection to the Vivier database that can read every schema (the
#                            owner of the database or a superuser), or instead, per service,
#   <SERVICE>_DATABASE_URL   e.g. AUTH_DATABASE_URL: that service's own role (it owns its schema)
#                            Without either, libpq's PGHOST/PGUSER/PGDATABASE/… are used.
#   S3_ENDPOINT, S3_FORCE_PATH_STYLE, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
#                            the S3 store (as for the services); BACKUP_S3_SSE=AES256|aws:kms
#                            asks for server-side encryption
#   NODE                     the Node 18+ binary for s3.mjs (default: the repository's, else node)
#
# Needs pg_dump and psql of the server's major version or newer, and Node with the repository's
# node_modules (npm ci) for infra/backup/s3.mjs. Each schema's dump is one consistent snapshot;
# the schemas are dumped one after the other (services share no tables; see restore.sh about
# Kafka offsets).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
if [ -z "${NODE:-}" ]; then
  if [ -x "$ROOT/node_modules/.bin/node" ]; then NODE="$ROOT/node_modules/.bin/node"; else NODE=node; fi
fi

die() { echo "backup.sh: $*" >&2; exit 1; }

[ -n "${BACKUP_S3_URI:-}" ] || die "set BACKUP_S3_URI (s3://bucket/prefix)"
case "$BACKUP_S3_URI" in s3://*) ;; *) die "BACKUP_S3_URI must start with s3://" ;; esac
command -v pg_dump >/dev/null || die "pg_dump not found (apt-get install postgresql-client)"
command -v psql >/dev/null || die "psql not found (apt-get install postgresql-client)"

if [ "$#" -gt 0 ]; then services=("$@"); else services=(auth chat admin worker); fi
for service in "${services[@]}"; do
  case "$service" in auth | chat | admin | worker) ;; *) die "unknown service '$service' (auth, chat, admin, worker)" ;; esac
done

stamp="$(date -u +%Y%m%dT%H%M%SZ)"
target="${BACKUP_S3_URI%/}/$stamp"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

url_of() {
  local var
  var="$(echo "$1" | tr '[:lower:]' '[:upper:]')_DATABASE_URL"
  printf '%s' "${!var:-${BACKUP_DATABASE_URL:-}}"
}

entries=()
for service in "${services[@]}"; do
  url="$(url_of "$service")"
  conn=()
  [ -n "$url" ] && conn=(--dbname="$url")
  dump="$work/$service.dump"

  # The snapshot time: Kafka offsets of the restored service go back to (at most) this moment.
  started="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "backup.sh: dumping schema $service" >&2
  pg_dump "${conn[@]}" --schema="$service" --format=custom --compress=6 \
    --no-owner --no-privileges --lock-wait-timeout=60000 --file="$dump"
  migrations="$(psql "${conn[@]}" -X -A -t -v ON_ERROR_STOP=1 \
    -c "select coalesce(string_agg('\"' || tag || '\"', ',' order by tag), '') from \"$service\".schema_migrations")"
  size="$(wc -c < "$dump" | tr -d ' ')"
  sha="$(sha256sum "$dump" | cut -d' ' -f1)"

  echo "backup.sh: uploading $target/$service.dump ($size bytes)" >&2
  "$NODE" "$HERE/s3.mjs" put "$target/$service.dump" "$dump"
  entries+=("    \"$service\": { \"file\": \"$service.dump\", \"snapshotStartedAt\": \"$started\", \"bytes\": $size, \"sha256\": \"$sha\", \"migrations\": [$migrations] }")
done

server_version="$(psql "${conn[@]}" -X -A -t -c 'show server_version' 2>/dev/null || echo unknown)"
{
  echo '{'
  echo "  \"format\": 1,"
  echo "  \"stamp\": \"$stamp\","
  echo "  \"finishedAt\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\","
  echo "  \"pgDump\": \"$(pg_dump --version | sed 's/"//g')\","
  echo "  \"serverVersion\": \"${server_version//\"/}\","
  echo '  "services": {'
  (IFS=$'\n'; echo "${entries[*]}" | sed '$!s/$/,/')
  echo '  }'
  echo '}'
} > "$work/manifest.json"
# Written last: a backup without its manifest is incomplete and restore.sh ignores it.
"$NODE" "$HERE/s3.mjs" put "$target/manifest.json" "$work/manifest.json"
echo "backup.sh: backup $stamp complete: $target/ (${services[*]})" >&2
echo "$stamp"
