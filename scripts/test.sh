#!/usr/bin/env bash
# The whole test suite: lint, format, types, the package boundaries, then pytest against
# the real MariaDB, Redis and RabbitMQ (started here on loopback when they are not
# running). Run it through ./bootstrap.sh test, which installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

say() { printf '[test] %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # name port seconds
  local i
  for ((i = 0; i < $3 * 4; i++)); do port_open "$2" && return 0; sleep 0.25; done
  say "$1 did not come up on port $2 within $3 s"; return 1
}

start_if_down() { # name port command...
  local name=$1 port=$2; shift 2
  if ! port_open "$port"; then
    say "starting $name"
    "$@" || { say "could not start $name with: $*"; return 1; }
    wait_port "$name" "$port" 90
  fi
}

if [ "$(id -u)" -eq 0 ]; then
  if ! port_open 3306; then
    install -d -o mysql -g mysql /run/mysqld 2>/dev/null || true
  fi
  start_if_down MariaDB 3306 start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd -- --user=mysql
  start_if_down Redis 6379 redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no
  start_if_down RabbitMQ 5672 rabbitmq-server -detached
  # Debian's MariaDB lets root in through its socket only: give the tests a TCP user.
  if ! mariadb -h 127.0.0.1 -u root -e 'select 1' >/dev/null 2>&1; then
    mariadb -u root <<'SQL'
CREATE USER IF NOT EXISTS 'abiquo_test'@'127.0.0.1' IDENTIFIED BY 'abiquo_test';
CREATE USER IF NOT EXISTS 'abiquo_test'@'localhost' IDENTIFIED BY 'abiquo_test';
GRANT ALL PRIVILEGES ON *.* TO 'abiquo_test'@'127.0.0.1';
GRANT ALL PRIVILEGES ON *.* TO 'abiquo_test'@'localhost';
SQL
    export ABIQUO_TEST_MARIADB_USER=abiquo_test ABIQUO_TEST_MARIADB_PASSWORD=abiquo_test
  fi
fi

say "ruff"
ruff check .
ruff format --check .
say "mypy"
mypy
say "import-linter"
lint-imports
say "pytest"
exec pytest "$@"
