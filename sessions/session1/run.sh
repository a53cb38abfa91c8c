#!/usr/bin/env bash
# Run this account's script for `screen`: from this folder, with the suite's virtual
# environment, output appended to run.log. Restarts after a crash with a growing pause;
# stops on a clean exit, on Ctrl+C, on a configuration error, or when the account must be
# logged in again (the script exits 3 and the command to run is printed).
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

say() { echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) run.sh[$name]: $*" | tee -a "$log"; }

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

pause=$MIN_PAUSE
while true; do
  say "starting $script ${args[*]:-}"
  started=$(date +%s)
  "$python" "$suite/$script" "${args[@]}" 2>&1 | tee -a "$log"
  code=${PIPESTATUS[0]}
  case $code in
    0) say "$script finished cleanly"; exit 0 ;;
    "$EXIT_INTERRUPTED") say "$script interrupted; not restarting"; exit "$code" ;;
    "$EXIT_USAGE") say "$script stopped on a configuration error (see above); fix it, then run again"; exit "$code" ;;
    "$EXIT_AUTH")
      say "account needs logging in; not restarting. Run:"
      say "  cd $suite && .venv/bin/python telegram_session.py auth sessions/$name"
      exit "$code" ;;
    "$EXIT_LIMITED") say "Telegram limited the account (see above); not restarting until then"; exit "$code" ;;
    "$EXIT_SESSION") say "session file or lock problem (see above); check with: .venv/bin/python telegram_session.py check sessions/$name"; exit "$code" ;;
  esac
  # a run that lasted a while was healthy: start the back-off again from the bottom
  if [ $(( $(date +%s) - started )) -ge $HEALTHY_RUN ]; then pause=$MIN_PAUSE; fi
  say "$script exited with code $code; restarting in ${pause}s"
  sleep "$pause"
  pause=$(( pause * 2 > MAX_PAUSE ? MAX_PAUSE : pause * 2 ))
done
