#!/usr/bin/env bash
# A throwaway PostgreSQL server for the tests (and for trying `expansion score --to postgresql://`).
#
#   scripts/start_postgres.sh install     install Debian's `postgresql` if no initdb/pg_ctl is found
#                                         (needs root; a no-op when PostgreSQL is already there)
#   scripts/start_postgres.sh start DIR   initdb a cluster in DIR (once), start it on a free
#                                         loopback port (socket in DIR/socket), create database
#                                         `expansion_test` and print its SQLAlchemy URL
#   scripts/start_postgres.sh env DIR     start, then print `export EXPANSION_TEST_PG_URL=...`
#                                         (use: eval "$(scripts/start_postgres.sh env .pg)")
#   scripts/start_postgres.sh stop DIR    stop the server of DIR (keeps the files)
#
# PostgreSQL refuses to run as root: as root, the cluster is owned by and runs as the
# `postgres` user (runuser), so DIR must be reachable by it (e.g. under /tmp, not /root).
# Authentication is `trust` on 127.0.0.1 and the socket only: a test server, not a service.
# The tests start and stop their own server (tests/pg.py) unless EXPANSION_TEST_PG_URL is set.
set -euo pipefail

DB_NAME="${EXPANSION_TEST_PG_DB:-expansion_test}"

pg_bin() {
    if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
        dirname "$(readlink -f "$(command -v pg_ctl)")"
        return 0
    fi
    local dir
    dir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    if [[ -n "$dir" && -x "$dir/initdb" ]]; then
        echo "$dir"
        return 0
    fi
    return 1
}

install_postgres() {
    if pg_bin >/dev/null; then
        return 0
    fi
    if [[ "$(id -u)" != 0 ]]; then
        echo "PostgreSQL is not installed and this is not root: install it (apt-get install" \
            "postgresql) or set EXPANSION_TEST_PG_URL" >&2
        exit 1
    fi
    echo "installing PostgreSQL (apt-get)..." >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq --no-install-recommends postgresql >&2
    pg_bin >/dev/null || { echo "PostgreSQL binaries not found after install" >&2; exit 1; }
}

as_owner() {
    # Run a command as the cluster's owner: `postgres` when we are root, else ourselves.
    if [[ "$(id -u)" == 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

free_port() {
    # A random high port nothing listens on (bash's /dev/tcp: no other tool needed).
    local port
    for _ in $(seq 1 50); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return 0
        fi
    done
    echo "no free port found" >&2
    return 1
}

start_postgres() {
    local dir="$1" bin data port
    install_postgres
    bin="$(pg_bin)"
    mkdir -p "$dir"
    dir="$(cd "$dir" && pwd)"
    data="$dir/data"
    mkdir -p "$dir/socket"
    if [[ "$(id -u)" == 0 ]]; then
        chown -R postgres: "$dir"
    fi
    chmod 700 "$dir"
    if [[ ! -f "$data/PG_VERSION" ]]; then
        as_owner "$bin/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --no-locale \
            >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log" >&2; exit 1; }
    fi
    if as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        port="$(cat "$dir/port")"
    else
        port="${PGPORT_WANTED:-$(free_port)}"
        echo "$port" >"$dir/port"
        # fsync off: a test server trades durability for speed (the client, not the server,
        # is what the crash tests kill).
        as_owner "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 -o \
            "-c listen_addresses=127.0.0.1 -p $port -k $dir/socket -c fsync=off -c full_page_writes=off" \
            start >/dev/null || { cat "$dir/server.log" >&2; exit 1; }
    fi
    if ! as_owner "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc \
        "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'" | grep -q 1; then
        as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres "$DB_NAME"
    fi
    echo "postgresql+psycopg://postgres@127.0.0.1:$port/$DB_NAME"
}

stop_postgres() {
    local dir="$1" bin
    bin="$(pg_bin)" || exit 0
    if [[ -f "$dir/data/PG_VERSION" ]]; then
        as_owner "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
    fi
}

usage() {
    sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

cmd="${1:-}"
case "$cmd" in
    install) install_postgres ;;
    start) [[ $# -eq 2 ]] || usage; start_postgres "$2" ;;
    env) [[ $# -eq 2 ]] || usage; echo "export EXPANSION_TEST_PG_URL=$(start_postgres "$2")" ;;
    stop) [[ $# -eq 2 ]] || usage; stop_postgres "$2" ;;
    *) usage ;;
esac
