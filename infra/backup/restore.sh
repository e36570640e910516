#!/usr/bin/env bash
# Restores Vivier service schemas from a backup made by backup.sh.
#
#   BACKUP_S3_URI=s3://vivier-backups/prod ADMIN_DATABASE_URL=postgres://postgres:…@db/vivier \
#     infra/backup/restore.sh --from latest|<stamp> [--yes] [--force] [service ...]
#
# For each service (default: every service in the backup), in ONE transaction: drop the schema
# and everything in it, create it again owned by the service's role, and load the dump as that
# role (so the service owns every object, exactly as after its migrations). A failure leaves the
# schema as it was. The dump's SHA-256 is checked against the manifest first, and the applied
# migrations after.
#
# Stop the service first (scale its Deployment to 0, or `docker compose stop <service>`): the
# script refuses while the service's role has open connections, unless --force.
#
# After a restore, the service's Kafka consumer group is AHEAD of its data: events it handled
# after the snapshot would never come back. Reset the group to the snapshot time before starting
# the service (the script prints the command); events replayed from there that the restored data
# already holds are skipped by the consumers' processed-events table, and outbox rows that were
# not yet published at the snapshot are published again (consumers skip duplicates by event id).
#
# Environment:
#   BACKUP_S3_URI        (required) s3://bucket/prefix given to backup.sh
#   ADMIN_DATABASE_URL   (required) a connection to the Vivier database as its owner or a
#                        superuser: it drops and creates the schemas (the service roles cannot)
#   <SERVICE>_ROLE       the service's role, e.g. AUTH_ROLE (default <service>_svc)
#   S3_ENDPOINT, S3_FORCE_PATH_STYLE, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, NODE
#                        as for backup.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
if [ -z "${NODE:-}" ]; then
  if [ -x "$ROOT/node_modules/.bin/node" ]; then NODE="$ROOT/node_modules/.bin/node"; else NODE=node; fi
fi

die() { echo "restore.sh: $*" >&2; exit 1; }
usage() { die "usage: restore.sh --from latest|<stamp> [--yes] [--force] [auth|chat|admin|worker ...]"; }

from=""
yes=0
force=0
services=()
while [ "$#" -gt 0 ]; do
  case "$1" in
    --from) from="${2:-}"; shift 2 ;;
    --from=*) from="${1#--from=}"; shift ;;
    --yes) yes=1; shift ;;
    --force) force=1; shift ;;
    auth | chat | admin | worker) services+=("$1"); shift ;;
    *) usage ;;
  esac
done
[ -n "$from" ] || usage
[ -n "${BACKUP_S3_URI:-}" ] || die "set BACKUP_S3_URI (s3://bucket/prefix)"
[ -n "${ADMIN_DATABASE_URL:-}" ] || die "set ADMIN_DATABASE_URL (owner of the database or a superuser)"
for tool in pg_restore psql sha256sum; do command -v "$tool" >/dev/null || die "$tool not found"; done

base="${BACKUP_S3_URI%/}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [ "$from" = latest ]; then
  # The newest backup that has its manifest (i.e. finished).
  from="$("$NODE" "$HERE/s3.mjs" ls "$base/" | sed -n 's#.*/\([0-9]\{8\}T[0-9]\{6\}Z\)/manifest\.json$#\1#p' | sort | tail -1)"
  [ -n "$from" ] || die "no complete backup under $base/"
fi
case "$from" in [0-9][0-9][0-9][0-9][0-9][0-9][0-9][0-9]T[0-9][0-9][0-9][0-9][0-9][0-9]Z) ;; *) die "not a backup stamp: $from" ;; esac

"$NODE" "$HERE/s3.mjs" get "$base/$from/manifest.json" "$work/manifest.json" || die "no manifest for backup $from"
manifest() { "$NODE" -e "const m=JSON.parse(require('fs').readFileSync(process.argv[1],'utf8'));const v=process.argv[2].split('.').reduce((o,k)=>o==null?o:o[k],m);process.stdout.write(v==null?'':Array.isArray(v)?v.join(' '):String(v))" "$work/manifest.json" "$1"; }

if [ "${#services[@]}" -eq 0 ]; then
  read -r -a services <<< "$("$NODE" -e "process.stdout.write(Object.keys(JSON.parse(require('fs').readFileSync(process.argv[1],'utf8')).services).join(' '))" "$work/manifest.json")"
fi

echo "restore.sh: backup $from; schemas: ${services[*]}" >&2
if [ "$yes" -ne 1 ]; then
  [ -t 0 ] || die "not a terminal: pass --yes to confirm replacing ${services[*]}"
  read -r -p "Replace the schemas ${services[*]} with backup $from? Everything written since is lost. [y/N] " answer
  [ "$answer" = y ] || [ "$answer" = Y ] || die "cancelled"
fi

psql_admin() { psql "$ADMIN_DATABASE_URL" -X -A -t -v ON_ERROR_STOP=1 "$@"; }

for service in "${services[@]}"; do
  file="$(manifest "services.$service.file")"
  [ -n "$file" ] || die "backup $from has no $service schema"
  role_var="$(echo "$service" | tr '[:lower:]' '[:upper:]')_ROLE"
  role="${!role_var:-${service}_svc}"
  dump="$work/$service.dump"

  "$NODE" "$HERE/s3.mjs" get "$base/$from/$file" "$dump"
  expected="$(manifest "services.$service.sha256")"
  actual="$(sha256sum "$dump" | cut -d' ' -f1)"
  [ "$expected" = "$actual" ] || die "$service.dump: SHA-256 $actual, manifest says $expected"

  open="$(psql_admin -v role="$role" <<'SQL'
select count(*) from pg_stat_activity where usename = :'role' and datname = current_database() and pid <> pg_backend_pid();
SQL
)"
  if [ "$open" != 0 ] && [ "$force" -ne 1 ]; then
    die "$role has $open open connection(s): stop the $service service first (or --force)"
  fi
  psql_admin -v role="$role" -q > /dev/null <<'SQL'
select pg_terminate_backend(pid) from pg_stat_activity where usename = :'role' and datname = current_database() and pid <> pg_backend_pid();
SQL

  # The archive's own CREATE SCHEMA is left out: the schema is created here, owned by the role.
  pg_restore --list "$dump" | grep -v -E "^[0-9]+; [0-9]+ [0-9]+ (SCHEMA|COMMENT) - (SCHEMA )?$service( |$)" > "$work/$service.list"

  echo "restore.sh: restoring schema $service as $role" >&2
  {
    echo 'SET client_min_messages = warning;'
    printf 'DROP SCHEMA IF EXISTS "%s" CASCADE;\n' "$service"
    printf 'CREATE SCHEMA "%s" AUTHORIZATION "%s";\n' "$service" "$role"
    pg_restore --file=- --no-owner --no-privileges --role="$role" --use-list="$work/$service.list" "$dump"
  } | psql "$ADMIN_DATABASE_URL" -X -q -v ON_ERROR_STOP=1 --single-transaction > /dev/null

  want="$(manifest "services.$service.migrations")"
  have="$(psql_admin -c "select coalesce(string_agg(tag, ' ' order by tag), '') from \"$service\".schema_migrations")"
  [ "$want" = "$have" ] || die "$service: migrations after restore ($have) differ from the manifest ($want)"
  snapshot="$(manifest "services.$service.snapshotStartedAt")"
  echo "restore.sh: $service restored (migrations: ${have:-none}; snapshot of $snapshot)" >&2
  cat >&2 <<EOF
restore.sh: before starting $service again, move its Kafka consumer group back to the snapshot:
  kafka-consumer-groups.sh --bootstrap-server <broker> --group $service --reset-offsets \\
    --to-datetime ${snapshot%Z}.000Z --all-topics --execute
  (--all-topics: its main and retry topics; see docs/operations.md, "Backups and restore").
EOF
done
echo "restore.sh: done: ${services[*]} from backup $from" >&2
