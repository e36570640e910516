#!/usr/bin/env bash
# Entry of `npm start` and `npm test` on a fresh machine: makes sure the project's own Node (22,
# from the `node` devDependency), the npm packages and the C toolchain for the dev Kafka broker
# are there, then hands over to tools/dev-stack/src/cli.ts running on Node 22.
set -euo pipefail
cd "$(dirname "$0")/../.."
command="${1:-start}"; shift || true

need_install=0
[ -x node_modules/.bin/node ] || need_install=1
[ -d node_modules/fastify ] || need_install=1
if [ -f node_modules/.package-lock.json ] && [ package-lock.json -nt node_modules/.package-lock.json ]; then need_install=1; fi
if [ "$need_install" = 1 ]; then
  echo "Installing npm packages (npm ci)…"
  # npm runs on the machine's Node here, often older than the project's (22, installed by this very
  # step): its engine warnings, one per package, say nothing the next steps do not settle. Errors show.
  npm ci --no-audit --no-fund --loglevel=error
fi

if [ ! -f /usr/include/librdkafka/rdkafka_mock.h ] && [ -z "${KAFKA_BROKERS:-}" ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "Installing librdkafka-dev for the dev Kafka broker (apt-get)…"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq librdkafka-dev build-essential >/dev/null
  else
    echo "The dev Kafka broker needs librdkafka-dev: run 'sudo apt-get install -y librdkafka-dev', or set KAFKA_BROKERS." >&2
    exit 1
  fi
fi

export PATH="$PWD/node_modules/.bin:$PATH"
exec node --import tsx tools/dev-stack/src/cli.ts "$command" "$@"
