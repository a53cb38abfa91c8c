#!/usr/bin/env bash
# Run this account's script for `screen`: from this folder, with the suite's virtual
# environment, every output line stamped with the UTC time and stored once, in run.log
# (rotated by size: LOG_MAX_BYTES, default 10 MB, LOG_BACKUPS old files, default 5; the
# script then writes no log file of its own). Restarts after a crash with a growing pause;
# stops on a clean exit, on Ctrl+C, on a configuration error, when the account must be
# logged in again (the script exits 3 and the command to run is printed), and on SIGTERM or
# SIGHUP (`kill`, `screen -X quit`): those are passed to the script, which finishes or
# gives back its work in flight, logs its summary and exits 0.
#
#   screen -S session1 -dm bash run.sh        # start in the background (session2: likewise)
#   RUN_SCRIPT=campaign.py bash run.sh start  # another script, with arguments
set -u
cd "$(dirname "$0")" || exit 1
folder=$(pwd)
suite=$(cd ../.. && pwd)
name=$(basename "$folder")
python="$suite/.venv/bin/python"
log="$folder/run.log"

EXIT_USAGE=2; EXIT_AUTH=3; EXIT_SESSION=4; EXIT_LIMITED=5; EXIT_INTERRUPTED=130
MIN_PAUSE=${RUN_MIN_PAUSE:-5}; MAX_PAUSE=${RUN_MAX_PAUSE:-600}; HEALTHY_RUN=600   # seconds

say() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) run.sh[$name]: $*" >&3; }

if [ ! -x "$python" ]; then
  echo "run.sh: no virtual environment at $suite/.venv; create it with:" >&2
  echo "  cd $suite && python3 -m venv .venv && .venv/bin/pip install -r requirements.txt" >&2
  exit 1
fi
if [ ! -f .env ]; then
  echo "run.sh: $folder/.env is missing; create it with: cp .env.example .env  (then edit it)" >&2
  exit 1
fi

# RUN_SCRIPT / RUN_ARGS: from the environment, else from .env, else the shared cloner.
env_value() { sed -n "s/^$1=//p" .env | tail -n 1 | sed -e 's/^["'\'']//' -e 's/["'\'']$//'; }
script=${RUN_SCRIPT:-$(env_value RUN_SCRIPT)}
script=${script:-clone_streaming_shared.py}
if [ $# -eq 0 ]; then
  read -r -a args <<< "${RUN_ARGS:-$(env_value RUN_ARGS)}"
else
  args=("$@")
fi
if [ ! -f "$suite/$script" ]; then
  echo "run.sh: $suite/$script does not exist; set RUN_SCRIPT in .env to one of the suite's scripts" >&2
  exit 1
fi

# One writer stamps, stores and shows every line (ours and the script's), in order; it
# outlives the script so a stopping script's last lines are kept.
exec 3> >(exec "$python" "$suite/migrate_db.py" --append-log "$log")
writer=$!
finish() {
  exec 3>&-
  for _ in $(seq 100); do kill -0 "$writer" 2>/dev/null || break; sleep 0.05; done
  exit "$1"
}
export SUITE_LOG_CAPTURED=1 PYTHONUNBUFFERED=1

# SIGTERM/SIGHUP: passed to the script (which stops like Ctrl+C), then no restart. Ctrl+C
# reaches the script from the terminal itself.
child=""; stopped_by=""
on_stop() {
  stopped_by=$1
  if [ -n "$child" ]; then kill -s "$1" "$child" 2>/dev/null; fi
}
trap 'on_stop TERM' TERM
trap 'on_stop HUP' HUP
trap ':' INT

pause=$MIN_PAUSE
while true; do
  say "starting $script ${args[*]:-}"
  started=$(date +%s)
  "$python" "$suite/$script" "${args[@]}" >&3 2>&3 &
  child=$!
  wait "$child"; code=$?
  while kill -0 "$child" 2>/dev/null; do wait "$child"; code=$?; done   # woken by a trap
  child=""
  if [ -n "$stopped_by" ]; then
    say "$script stopped by SIG$stopped_by (exit code $code); not restarting"
    finish 0
  fi
  case $code in
    0) say "$script finished cleanly"; finish 0 ;;
    "$EXIT_INTERRUPTED") say "$script interrupted; not restarting"; finish "$code" ;;
    "$EXIT_USAGE") say "$script stopped on a configuration error (see above); fix it, then run again"; finish "$code" ;;
    "$EXIT_AUTH")
      say "account needs logging in; not restarting. Run:"
      say "  cd $suite && .venv/bin/python telegram_session.py auth sessions/$name"
      finish "$code" ;;
    "$EXIT_LIMITED") say "Telegram limited the account (see above); not restarting until then"; finish "$code" ;;
    "$EXIT_SESSION") say "session file or lock problem (see above); check with: .venv/bin/python telegram_session.py check sessions/$name"; finish "$code" ;;
  esac
  # a run that lasted a while was healthy: start the back-off again from the bottom
  if [ $(( $(date +%s) - started )) -ge $HEALTHY_RUN ]; then pause=$MIN_PAUSE; fi
  say "$script exited with code $code; restarting in ${pause}s"
  sleep "$pause" & child=$!
  wait "$child"; child=""
  if [ -n "$stopped_by" ]; then say "stopped by SIG$stopped_by while waiting to restart"; finish 0; fi
  pause=$(( pause * 2 > MAX_PAUSE ? MAX_PAUSE : pause * 2 ))
done
