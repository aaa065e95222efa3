#!/usr/bin/env bash
# Local platform for dev / tests / CI: one real Apache Kafka 4.x broker (KRaft,
# single node) and one real PostgreSQL server, both private to this checkout.
#
#   scripts/platform.sh start    install what is missing, start both, wait until ready
#   scripts/platform.sh stop     stop both (SIGTERM, SIGKILL after 30s)
#   scripts/platform.sh status   exit 0 when both run, 3 otherwise
#   scripts/platform.sh env      print `export` lines:  eval "$(scripts/platform.sh env)"
#
# Ports: IOC_KAFKA_PORT (19092), IOC_KAFKA_CONTROLLER_PORT (IOC_KAFKA_PORT+1), IOC_PG_PORT (15432).
# A second, separate broker stands for the provincial IOC's cluster (sync-province's target):
# SASL_SSL only (SCRAM-SHA-512 over TLS, certificate authority made here for the local platform),
# IOC_PROVINCE_KAFKA_PORT (19094) and its controller (+1); IOC_PROVINCE_KAFKA=0 skips it (the
# default with IOC_RUN_DIR).
# State lives in <repo>/.run (data, logs, pids; IOC_RUN_DIR moves it) and <repo>/.cache (Kafka
# jars), both git-ignored.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
KAFKA_PORT="${IOC_KAFKA_PORT:-19092}"
CONTROLLER_PORT="${IOC_KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
PG_PORT="${IOC_PG_PORT:-15432}"
BOOTSTRAP="127.0.0.1:${KAFKA_PORT}"
DATABASE_URL="postgresql://ioc@127.0.0.1:${PG_PORT}/ioc"

LIBS="$ROOT/.cache/kafka-libs"
RUN_DIR="${IOC_RUN_DIR:-$ROOT/.run}"  # a second, private platform (fault tests) lives elsewhere
K_RUN="$RUN_DIR/kafka"
K_PID="$K_RUN/kafka.pid"
PG_RUN="$RUN_DIR/pg"
PG_DATA="$PG_RUN/data"
PG_SOCK="$PG_RUN/sock"
# Unix socket paths are limited to ~107 bytes; deep checkouts get a short per-checkout dir.
if (( ${#PG_SOCK} > 80 )); then PG_SOCK="/tmp/ioc-pg-$(printf '%s' "$ROOT" | cksum | cut -d' ' -f1)"; fi

log() { echo "[platform] $*" >&2; }
die() { echo "[platform] ERROR: $*" >&2; exit 1; }
is_root() { [[ $EUID -eq 0 ]]; }
alive() { [[ -r "/proc/$1/stat" && "$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)" != Z ]]; } # zombies count as dead
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
fail_with_log() { # <message> <log file>
  echo "[platform] ERROR: $1" >&2
  if [[ -f "$2" ]]; then echo "[platform] --- last 40 lines of $2 ---" >&2; tail -n 40 "$2" >&2; fi
  exit 1
}

APT_UPDATED=0
apt_install() { # <package>...
  is_root || die "missing $* and not root: install it yourself (apt-get install $*)"
  command -v apt-get >/dev/null || die "missing $* and no apt-get on this machine"
  log "installing $* via apt-get"
  if (( !APT_UPDATED )); then apt-get update -qq >&2; APT_UPDATED=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

# ------------------------------------------------------------------ Kafka
kafka_pid() { # prints the pid when our broker runs
  [[ -f "$K_PID" ]] || return 1
  local pid; pid="$(cat "$K_PID")"
  [[ -n "$pid" ]] && alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka' || return 1
  echo "$pid"
}

kafka_java() { java -cp "$LIBS/*" "$@"; }

ensure_kafka_libs() {
  command -v java >/dev/null || apt_install openjdk-17-jre-headless
  local stamp; stamp="$(sha256sum "$ROOT/deploy/kafka/pom.xml" | cut -d' ' -f1)"
  [[ -f "$LIBS/.complete" && "$(cat "$LIBS/.complete")" == "$stamp" ]] && return 0
  command -v mvn >/dev/null || apt_install maven
  log "resolving Kafka jars with Maven into .cache/kafka-libs (one-time)"
  local tmp="$LIBS.tmp.$$"
  rm -rf "$tmp"; mkdir -p "$tmp"
  mkdir -p "$ROOT/.run"
  mvn -B -Dstyle.color=never -f "$ROOT/deploy/kafka/pom.xml" dependency:copy-dependencies \
    -DoutputDirectory="$tmp" >"$ROOT/.run/maven.log" 2>&1 \
    || { rm -rf "$tmp"; fail_with_log "mvn dependency:copy-dependencies failed (deploy/kafka/pom.xml)" "$ROOT/.run/maven.log"; }
  echo "$stamp" >"$tmp/.complete"
  rm -rf "$LIBS"; mv "$tmp" "$LIBS"
}

kafka_start() {
  local pid
  if pid="$(kafka_pid)"; then
    local running; running="$(cat "$K_RUN/port" 2>/dev/null || echo "?")"
    [[ "$running" == "$KAFKA_PORT" ]] || die "kafka of this checkout already runs on port $running, not $KAFKA_PORT; run '$0 stop' first"
    log "kafka already running (pid $pid) on $BOOTSTRAP"; return 0
  fi
  port_open "$KAFKA_PORT" && die "port $KAFKA_PORT is in use by another process (another checkout? set IOC_KAFKA_PORT)"
  port_open "$CONTROLLER_PORT" && die "port $CONTROLLER_PORT is in use (set IOC_KAFKA_CONTROLLER_PORT)"
  ensure_kafka_libs
  mkdir -p "$K_RUN/data" "$K_RUN/logs"
  sed -e "s#127\.0\.0\.1:19092#127.0.0.1:${KAFKA_PORT}#g" -e "s#127\.0\.0\.1:19093#127.0.0.1:${CONTROLLER_PORT}#g" \
      -e "s#^log\.dirs=.*#log.dirs=${K_RUN}/data#" "$ROOT/deploy/kafka/server.properties" >"$K_RUN/server.properties"
  printf 'request.timeout.ms=5000\ndefault.api.timeout.ms=8000\n' >"$K_RUN/admin.properties"
  if [[ ! -f "$K_RUN/data/meta.properties" ]]; then
    local cid; cid="$(kafka_java kafka.tools.StorageTool random-uuid)"
    log "formatting Kafka storage (cluster id $cid)"
    kafka_java kafka.tools.StorageTool format -t "$cid" -c "$K_RUN/server.properties" >"$K_RUN/logs/format.log" 2>&1 \
      || fail_with_log "kafka storage format failed" "$K_RUN/logs/format.log"
  fi
  log "starting kafka on $BOOTSTRAP (controller 127.0.0.1:$CONTROLLER_PORT)"
  # setsid: the broker must outlive the calling shell / make process group.
  nohup setsid java -Xms256m -Xmx1g -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError \
    -Djava.awt.headless=true -Dkafka.logs.dir="$K_RUN/logs" \
    -Dlog4j2.configurationFile="$ROOT/deploy/kafka/log4j2.yaml" \
    -cp "$LIBS/*" kafka.Kafka "$K_RUN/server.properties" >"$K_RUN/logs/stdout.log" 2>&1 </dev/null 9>&- &
  echo $! >"$K_PID"; echo "$KAFKA_PORT" >"$K_RUN/port"
  local deadline=$((SECONDS + 90))
  while :; do
    kafka_pid >/dev/null || fail_with_log "kafka exited during startup" "$K_RUN/logs/stdout.log"
    if port_open "$KAFKA_PORT" && timeout 20 java -cp "$LIBS/*" org.apache.kafka.tools.TopicCommand \
        --bootstrap-server "$BOOTSTRAP" --command-config "$K_RUN/admin.properties" --list >/dev/null 2>&1; then
      break
    fi
    (( SECONDS < deadline )) || fail_with_log "kafka did not answer metadata requests within 90s" "$K_RUN/logs/server.log"
    sleep 1
  done
  log "kafka ready on $BOOTSTRAP (pid $(cat "$K_PID"))"
}

wait_gone() { # <pid> <seconds>
  local deadline=$((SECONDS + $2))
  while alive "$1"; do (( SECONDS < deadline )) || return 1; sleep 0.3; done
}

kafka_stop() {
  local pid
  if ! pid="$(kafka_pid)"; then rm -f "$K_PID"; log "kafka not running"; return 0; fi
  log "stopping kafka (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  wait_gone "$pid" 30 || { log "kafka still running after 30s, sending SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; }
  wait_gone "$pid" 10 || die "kafka (pid $pid) survived SIGKILL"
  rm -f "$K_PID"; log "kafka stopped"
}

# ------------------------------------------------------------------ provincial Kafka (SASL_SSL)
# Its own KRaft node, data folder and credentials beside the first broker's. The CA, the
# broker's certificate (SAN 127.0.0.1, localhost) and random SCRAM passwords are made once.
P_RUN="$(dirname "$K_RUN")/province-kafka"
P_PID="$P_RUN/kafka.pid"
P_PKI="$P_RUN/pki"
P_SECRETS="$P_RUN/secrets"
# A private platform (IOC_RUN_DIR, e.g. the fault tests') has no province unless asked.
if [[ -n "${IOC_RUN_DIR:-}" ]]; then PROVINCE_ENABLED="${IOC_PROVINCE_KAFKA:-0}"; else PROVINCE_ENABLED="${IOC_PROVINCE_KAFKA:-1}"; fi
PROVINCE_PORT="${IOC_PROVINCE_KAFKA_PORT:-19094}"
PROVINCE_CONTROLLER_PORT="${IOC_PROVINCE_KAFKA_CONTROLLER_PORT:-$((PROVINCE_PORT + 1))}"
PROVINCE_BOOTSTRAP="127.0.0.1:${PROVINCE_PORT}"
PROVINCE_SYNC_USER="sync-loc-ninh"

province_pid() {
  [[ -f "$P_PID" ]] || return 1
  local pid; pid="$(cat "$P_PID")"
  [[ -n "$pid" ]] && alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka' || return 1
  echo "$pid"
}

province_pki() { # CA, broker key store (PKCS12), client trust file (PEM); idempotent
  [[ -f "$P_PKI/broker.p12" && -f "$P_PKI/ca.pem" ]] && return 0
  command -v openssl >/dev/null || apt_install openssl
  mkdir -p "$P_PKI" "$P_SECRETS"; chmod 700 "$P_SECRETS"
  local pass; pass="$(openssl rand -hex 16)"
  log "creating the local platform CA and the provincial broker certificate in $P_PKI"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=IOC local platform CA" \
    -keyout "$P_PKI/ca.key" -out "$P_PKI/ca.pem" >/dev/null 2>&1
  openssl req -newkey rsa:2048 -nodes -subj "/CN=province-kafka" \
    -keyout "$P_PKI/broker.key" -out "$P_PKI/broker.csr" >/dev/null 2>&1
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n' >"$P_PKI/broker.ext"
  openssl x509 -req -in "$P_PKI/broker.csr" -CA "$P_PKI/ca.pem" -CAkey "$P_PKI/ca.key" -CAcreateserial \
    -days 3650 -extfile "$P_PKI/broker.ext" -out "$P_PKI/broker.pem" >/dev/null 2>&1
  openssl pkcs12 -export -in "$P_PKI/broker.pem" -inkey "$P_PKI/broker.key" -certfile "$P_PKI/ca.pem" \
    -name broker -passout "pass:$pass" -out "$P_PKI/broker.p12.tmp"
  printf '%s' "$pass" >"$P_SECRETS/keystore-password"
  mv "$P_PKI/broker.p12.tmp" "$P_PKI/broker.p12"
  chmod 600 "$P_PKI"/*.key "$P_SECRETS"/*
}

province_secret() { # <name>: a random password made once
  local f="$P_SECRETS/$1"
  if [[ ! -s "$f" ]]; then mkdir -p "$P_SECRETS"; openssl rand -hex 24 | tr -d '\n' >"$f"; chmod 600 "$f"; fi
  cat "$f"
}

province_start() {
  [[ "$PROVINCE_ENABLED" == 1 ]] || return 0
  local pid
  if pid="$(province_pid)"; then
    local running; running="$(cat "$P_RUN/port" 2>/dev/null || echo "?")"
    [[ "$running" == "$PROVINCE_PORT" ]] || die "provincial kafka of this checkout already runs on port $running, not $PROVINCE_PORT; run '$0 stop' first"
    log "provincial kafka already running (pid $pid) on $PROVINCE_BOOTSTRAP"; return 0
  fi
  port_open "$PROVINCE_PORT" && die "port $PROVINCE_PORT is in use by another process (set IOC_PROVINCE_KAFKA_PORT)"
  port_open "$PROVINCE_CONTROLLER_PORT" && die "port $PROVINCE_CONTROLLER_PORT is in use (set IOC_PROVINCE_KAFKA_CONTROLLER_PORT)"
  ensure_kafka_libs
  province_pki
  mkdir -p "$P_RUN/data" "$P_RUN/logs"
  local admin_pw sync_pw ks_pw
  admin_pw="$(province_secret admin-password)"; sync_pw="$(province_secret sync-password)"
  ks_pw="$(cat "$P_SECRETS/keystore-password")"
  # The first broker's file with the ports, data folder and listeners replaced.
  sed -e "s#127\.0\.0\.1:19093#127.0.0.1:${PROVINCE_CONTROLLER_PORT}#g" \
      -e "s#^log\.dirs=.*#log.dirs=${P_RUN}/data#" \
      -e '/^listeners=/d' -e '/^advertised\.listeners=/d' -e '/^inter\.broker\.listener\.name=/d' \
      -e '/^listener\.security\.protocol\.map=/d' "$ROOT/deploy/kafka/server.properties" >"$P_RUN/server.properties"
  cat >>"$P_RUN/server.properties" <<PROPS

############################# Provincial cluster: SASL_SSL only #############################
listeners=SASL_SSL://127.0.0.1:${PROVINCE_PORT},CONTROLLER://127.0.0.1:${PROVINCE_CONTROLLER_PORT}
advertised.listeners=SASL_SSL://127.0.0.1:${PROVINCE_PORT}
listener.security.protocol.map=CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
inter.broker.listener.name=SASL_SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="${admin_pw}";
ssl.keystore.type=PKCS12
ssl.keystore.location=${P_PKI}/broker.p12
ssl.keystore.password=${ks_pw}
ssl.truststore.type=PEM
ssl.truststore.location=${P_PKI}/ca.pem
ssl.client.auth=requested
PROPS
  chmod 600 "$P_RUN/server.properties"
  cat >"$P_RUN/admin.properties" <<PROPS
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="${admin_pw}";
ssl.truststore.type=PEM
ssl.truststore.location=${P_PKI}/ca.pem
request.timeout.ms=5000
default.api.timeout.ms=8000
PROPS
  chmod 600 "$P_RUN/admin.properties"
  if [[ ! -f "$P_RUN/data/meta.properties" ]]; then
    local cid; cid="$(kafka_java kafka.tools.StorageTool random-uuid)"
    log "formatting provincial Kafka storage (cluster id $cid) with SCRAM users admin, $PROVINCE_SYNC_USER"
    kafka_java kafka.tools.StorageTool format -t "$cid" -c "$P_RUN/server.properties" \
      --add-scram "SCRAM-SHA-512=[name=admin,password=${admin_pw}]" \
      --add-scram "SCRAM-SHA-512=[name=${PROVINCE_SYNC_USER},password=${sync_pw}]" \
      >"$P_RUN/logs/format.log" 2>&1 || fail_with_log "provincial kafka storage format failed" "$P_RUN/logs/format.log"
  fi
  log "starting provincial kafka on $PROVINCE_BOOTSTRAP (SASL_SSL; controller 127.0.0.1:$PROVINCE_CONTROLLER_PORT)"
  nohup setsid java -Xms128m -Xmx512m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError \
    -Djava.awt.headless=true -Dkafka.logs.dir="$P_RUN/logs" \
    -Dlog4j2.configurationFile="$ROOT/deploy/kafka/log4j2.yaml" \
    -cp "$LIBS/*" kafka.Kafka "$P_RUN/server.properties" >"$P_RUN/logs/stdout.log" 2>&1 </dev/null 9>&- &
  echo $! >"$P_PID"; echo "$PROVINCE_PORT" >"$P_RUN/port"
}

province_wait() { # after province_start: ready when an authenticated metadata request answers
  [[ "$PROVINCE_ENABLED" == 1 && -f "$P_RUN/admin.properties" ]] || return 0
  local deadline=$((SECONDS + 90))
  while :; do
    province_pid >/dev/null || fail_with_log "provincial kafka exited during startup" "$P_RUN/logs/stdout.log"
    if port_open "$PROVINCE_PORT" && timeout 20 java -cp "$LIBS/*" org.apache.kafka.tools.TopicCommand \
        --bootstrap-server "$PROVINCE_BOOTSTRAP" --command-config "$P_RUN/admin.properties" --list >/dev/null 2>&1; then
      break
    fi
    (( SECONDS < deadline )) || fail_with_log "provincial kafka did not answer within 90s" "$P_RUN/logs/server.log"
    sleep 1
  done
  log "provincial kafka ready on $PROVINCE_BOOTSTRAP (pid $(cat "$P_PID"))"
}

province_stop() {
  local pid
  if ! pid="$(province_pid)"; then rm -f "$P_PID"; return 0; fi
  log "stopping provincial kafka (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  wait_gone "$pid" 30 || { log "provincial kafka still running after 30s, sending SIGKILL"; kill -KILL "$pid" 2>/dev/null || true; }
  wait_gone "$pid" 10 || die "provincial kafka (pid $pid) survived SIGKILL"
  rm -f "$P_PID"; log "provincial kafka stopped"
}

# ------------------------------------------------------------------ PostgreSQL
PG_BIN="" PG_USER=""
find_pg_bin() {
  local d
  d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
  if [[ -z "$d" ]] && command -v initdb >/dev/null; then d="$(dirname "$(command -v initdb)")"; fi
  [[ -n "$d" && -x "$d/initdb" ]] && PG_BIN="$d"
}

pick_pg_user() { # postgres (and pg_ctl) refuse to run as root: use the data dir owner / a system user
  PG_USER=""
  is_root || return 0
  if [[ -d "$PG_DATA" && "$(stat -c %U "$PG_DATA")" != root ]]; then PG_USER="$(stat -c %U "$PG_DATA")"
  elif id postgres >/dev/null 2>&1; then PG_USER=postgres
  else PG_USER=ioc-pg; fi
}

as_pg() { if [[ -n "$PG_USER" ]]; then runuser -u "$PG_USER" -- "$@"; else "$@"; fi; }

ensure_pg() {
  find_pg_bin || { apt_install postgresql; find_pg_bin || die "postgresql installed but no initdb found under /usr/lib/postgresql/*/bin"; }
  mkdir -p "$PG_RUN" "$PG_SOCK"
  pick_pg_user
  if is_root; then
    id "$PG_USER" >/dev/null 2>&1 || { log "creating system user $PG_USER"; useradd -r -M -s /usr/sbin/nologin "$PG_USER"; }
    chown -R "$PG_USER:" "$PG_RUN" "$PG_SOCK"
    # The server user must be able to traverse every parent dir (mktemp -d dirs are 0700).
    local d="" part parts
    IFS=/ read -ra parts <<<"${PG_RUN#/}"
    for part in "${parts[@]}"; do # top-down, so each test sees the fixed parents
      d="$d/$part"
      if ! runuser -u "$PG_USER" -- test -x "$d"; then log "granting o+x on $d so $PG_USER can reach .run/pg"; chmod o+x "$d"; fi
    done
  fi
}

pg_running() { [[ -n "$PG_BIN" && -f "$PG_DATA/PG_VERSION" ]] && as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" status >/dev/null 2>&1; }

pg_start() {
  ensure_pg
  if ! pg_running; then
    port_open "$PG_PORT" && die "port $PG_PORT is in use by another process (another checkout? set IOC_PG_PORT)"
    if [[ ! -f "$PG_DATA/PG_VERSION" ]]; then
      log "initdb $PG_DATA (superuser ioc, UTF8, trust auth)"
      as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U ioc -E UTF8 --locale=C --auth=trust >"$PG_RUN/initdb.log" 2>&1 \
        || fail_with_log "initdb failed" "$PG_RUN/initdb.log"
    fi
    local want; want="$(basename "$(dirname "$PG_BIN")")"
    [[ "$(cat "$PG_DATA/PG_VERSION")" == "$want" ]] \
      || die "$PG_DATA was created by PostgreSQL $(cat "$PG_DATA/PG_VERSION") but $PG_BIN is $want; remove .run/pg to re-init"
    log "starting postgresql on 127.0.0.1:$PG_PORT"
    local options="-p $PG_PORT -k $PG_SOCK" name value
    while IFS='=' read -r name value; do
      name="${name//[[:space:]]/}"; value="${value#"${value%%[![:space:]]*}"}"
      [[ -z "$name" || "$name" == \#* ]] || options+=" -c $name=$value"
    done <"$ROOT/deploy/postgres/platform.conf"
    if ! as_pg setsid -w "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_RUN/pg.log" -w -t 30 \
        -o "$options" start >/dev/null 9>&-; then
      fail_with_log "postgresql did not start within 30s" "$PG_RUN/pg.log"
    fi
  else
    local running; running="$(sed -n 4p "$PG_DATA/postmaster.pid" 2>/dev/null || echo "?")"
    [[ "$running" == "$PG_PORT" ]] || die "postgresql of this checkout already runs on port $running, not $PG_PORT; run '$0 stop' first"
    log "postgresql already running on 127.0.0.1:$PG_PORT"
  fi
  local deadline=$((SECONDS + 30))
  until "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; do
    (( SECONDS < deadline )) || fail_with_log "postgresql not accepting connections after 30s" "$PG_RUN/pg.log"
    sleep 0.5
  done
  if [[ -z "$("$PG_BIN/psql" -h 127.0.0.1 -p "$PG_PORT" -U ioc -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='ioc'")" ]]; then
    log "creating database ioc"; "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U ioc ioc
  fi
  log "postgresql ready: $DATABASE_URL"
}

pg_stop() {
  find_pg_bin || true; pick_pg_user
  if ! pg_running; then log "postgresql not running"; return 0; fi
  local pid; pid="$(head -n 1 "$PG_DATA/postmaster.pid")"
  log "stopping postgresql (pid $pid)"
  as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" stop -m fast -w -t 30 >/dev/null 2>&1 || true
  if ! wait_gone "$pid" 1; then
    log "postgresql still running after 30s, trying immediate shutdown, then SIGKILL"
    as_pg "$PG_BIN/pg_ctl" -D "$PG_DATA" stop -m immediate -w -t 5 >/dev/null 2>&1 || true
    wait_gone "$pid" 1 || kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 10 || die "postgresql (pid $pid) survived SIGKILL"
  fi
  log "postgresql stopped"
}

# ------------------------------------------------------------------ main
print_env() {
  echo "export IOC_KAFKA_BOOTSTRAP=$BOOTSTRAP"
  echo "export IOC_DATABASE_URL=$DATABASE_URL"
  echo "export IOC_KAFKA_SECURITY_PROTOCOL=PLAINTEXT"   # the local broker: clear text, said so
  echo "export IOC_PLATFORM_RUN_DIR=$RUN_DIR"   # its pid files: the bench reads their CPU
  if [[ "$PROVINCE_ENABLED" == 1 ]]; then
    echo "export IOC_PROVINCE_KAFKA_BOOTSTRAP=$PROVINCE_BOOTSTRAP"
    echo "export IOC_PROVINCE_KAFKA_CA_FILE=$P_PKI/ca.pem"
    echo "export IOC_PROVINCE_KAFKA_SASL_USER=$PROVINCE_SYNC_USER"
    echo "export IOC_PROVINCE_KAFKA_SASL_PASSWORD_FILE=$P_SECRETS/sync-password"
    echo "export IOC_PROVINCE_KAFKA_PID_FILE=$P_PID"   # tests freeze it to play an outage
  fi
}

status() {
  local rc=0 pid port
  if pid="$(kafka_pid)"; then echo "kafka:      running (pid $pid) on 127.0.0.1:$(cat "$K_RUN/port" 2>/dev/null)"
  else echo "kafka:      stopped"; rc=3; fi
  if [[ "$PROVINCE_ENABLED" == 1 ]]; then
    if pid="$(province_pid)"; then echo "province:   running (pid $pid) on $PROVINCE_BOOTSTRAP (SASL_SSL)"
    else echo "province:   stopped"; rc=3; fi
  fi
  find_pg_bin || true; pick_pg_user
  if pg_running; then
    pid="$(sed -n 1p "$PG_DATA/postmaster.pid")"; port="$(sed -n 4p "$PG_DATA/postmaster.pid")"
    echo "postgresql: running (pid $pid) on 127.0.0.1:$port -> postgresql://ioc@127.0.0.1:$port/ioc"
  else echo "postgresql: stopped"; rc=3; fi
  return "$rc"
}

lock() { # serialise start/stop of this checkout (several people/jobs may share one working tree)
  mkdir -p "$ROOT/.run"; exec 9>"$ROOT/.run/platform.lock"  # fd 9 is closed for the servers (9>&-)
  flock -w 180 9 || die "another 'platform.sh start/stop' of this checkout still runs (waited 180s on .run/platform.lock)"
}

case "${1:-}" in
  start|stop) lock ;;
esac
case "${1:-}" in
  # The provincial broker boots while the first one is waited for (start-up stays short).
  start)  pg_start; province_start; kafka_start; province_wait; print_env | sed 's/^/[platform] /' >&2 ;;
  stop)   province_stop; kafka_stop; pg_stop ;;
  status) status ;;
  env)    print_env ;;
  *)      echo "usage: $0 {start|stop|status|env}" >&2; exit 2 ;;
esac
